"""`Components`: the loaded parts of one latent diffusion model, as every other layer sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError
from ldmkit.models.text import TextEncoder


@dataclass
class Components:
    """UNet, VAE, text encoder and scheduler settings of one model, plus where it came from."""

    unet: Any
    """diffusers UNet2DConditionModel; its cross_attention_dim equals text_encoder.hidden_size."""
    vae: Any
    """diffusers AutoencoderKL; `vae.config.scaling_factor` is the latent scale (never hard-coded elsewhere)."""
    text_encoder: TextEncoder
    """Prompt -> context [B, max_length, hidden]."""
    scheduler_config: dict[str, Any]
    """diffusers scheduler config including "_class_name" (how the model was trained to be sampled)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Contents of ldmkit.json (preset, seed, training config, dataset card, metrics); {} for foreign folders."""
    source: Path | None = None
    """The folder or file the weights were loaded from; None for freshly built components."""

    def __post_init__(self) -> None:
        if not isinstance(self.text_encoder, TextEncoder):
            raise TypeError(f"Components.text_encoder must be a TextEncoder, got {type(self.text_encoder).__name__}")
        if not isinstance(self.scheduler_config, dict) or "_class_name" not in self.scheduler_config:
            raise ValueError("Components.scheduler_config must be a dict with a '_class_name' entry")
        if not isinstance(self.meta, dict):
            raise TypeError(f"Components.meta must be a dict, got {type(self.meta).__name__}")
        if self.source is not None:
            self.source = Path(self.source)
        cross = self.unet.config.cross_attention_dim
        if cross != self.text_encoder.hidden_size:
            raise UsageError(
                f"UNet cross_attention_dim {cross} differs from the text encoder's hidden size "
                f"{self.text_encoder.hidden_size}; they must match"
            )

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel along each side (8 for SD 1.5)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the UNet denoises (4 for SD)."""
        return int(self.unet.config.in_channels)

    @property
    def scaling_factor(self) -> float:
        """Multiply VAE latents by this before diffusion, divide before decoding."""
        return float(self.vae.config.scaling_factor)

    @property
    def image_size(self) -> int:
        """Default square image side in pixels: ldmkit.json's image_size, else UNet sample_size x factor."""
        size = self.meta.get("image_size")
        if isinstance(size, int) and size > 0:
            return size
        sample = self.unet.config.sample_size
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        return int(sample) * self.vae_scale_factor

    def latent_shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """(channels, height, width) of the latent for a square image of `image_size` (default: image_size)."""
        side = self.image_size if image_size is None else image_size
        if side % self.vae_scale_factor:
            raise UsageError(f"image size {side} is not a multiple of the VAE factor {self.vae_scale_factor}")
        return (self.latent_channels, side // self.vae_scale_factor, side // self.vae_scale_factor)
