"""Model presets as data: architectures and default sampler settings (random init: ldmkit.models.presets).

Kept apart from `build_components` so that loading a single-file checkpoint (which reads this table) never
imports model-folder loading back (tests/test_layers.py: no import cycles).

Note on diffusers naming: in UNet2DConditionModel `attention_head_dim` is (for legacy reasons)
the number of *heads*; the per-head width is channels / that number. Our own presets keep the
per-head width >= 32 at every level.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ldmkit.errors import UsageError
from ldmkit.models.text import CLIP_EOS, KINDS

# SD 1.5's scheduler/scheduler_config.json (PNDM with PLMS steps only, "leading" spacing).
SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "clip_sample": False,
}


def _vae(channels: tuple[int, ...], layers: int, image_size: int, scaling: float) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": channels,
        "down_block_types": ("DownEncoderBlock2D",) * len(channels),
        "up_block_types": ("UpDecoderBlock2D",) * len(channels),
        "layers_per_block": layers,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "sample_size": image_size,
        "scaling_factor": scaling,
    }


def _unet(channels, heads, cross_attn: tuple[bool, ...], layers: int, sample: int, context: int, **extra):
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cross_attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cross_attn))
    return {
        "sample_size": sample,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "attention_head_dim": heads,  # = number of heads, see module docstring
        "cross_attention_dim": context,
        "norm_num_groups": 32,
        **extra,
    }


def _clip(hidden: int, layers: int, heads: int, mlp: int, act: str = "quick_gelu", proj: int | None = None):
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": proj or hidden,
    }


@dataclass(frozen=True)
class ModelPreset:
    """Everything needed to build a model from scratch: architectures and sampler settings."""

    name: str
    """Preset name as given on the command line (`ldmkit model init --preset NAME`)."""
    image_size: int
    """Square image side in pixels the model is meant for."""
    vae: dict[str, Any]
    """AutoencoderKL constructor arguments (its scaling_factor is replaced once training measures it)."""
    unet: dict[str, Any]
    """UNet2DConditionModel constructor arguments; sample_size is the latent side."""
    text_encoder: str
    """Default text encoder kind: "clip" (random CLIP of clip_text_config) or "minilm" (pretrained)."""
    clip_text_config: dict[str, Any]
    """CLIPTextConfig arguments used when the text encoder kind is "clip"."""
    scheduler: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(SD15_SCHEDULER))
    """diffusers scheduler config with "_class_name"; default is SD 1.5's."""
    clip_pad_token: str = CLIP_EOS
    """Token CLIP prompts are padded with (SD 1.x: <|endoftext|>; SD 2.x: "!")."""

    def __post_init__(self) -> None:
        if not self.name:
            raise UsageError("ModelPreset.name must be a non-empty string")
        factor = 2 ** (len(self.vae["block_out_channels"]) - 1)
        if self.image_size <= 0 or self.image_size % factor:
            raise UsageError(f"ModelPreset.image_size must be a positive multiple of {factor}, got {self.image_size}")
        if self.unet["sample_size"] != self.image_size // factor:
            raise UsageError(
                f"preset {self.name}: unet sample_size {self.unet['sample_size']} should be "
                f"image_size / VAE factor = {self.image_size // factor}"
            )
        if self.text_encoder not in KINDS:
            raise UsageError(f"ModelPreset.text_encoder must be one of {', '.join(KINDS)}, got {self.text_encoder!r}")
        if "_class_name" not in self.scheduler:
            raise UsageError("ModelPreset.scheduler must contain '_class_name'")

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel along each side."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)


PRESETS: dict[str, ModelPreset] = {
    # Unit tests: 32x32 images -> 16x16x4 latents, ~1.5M params in all, builds in well under a second.
    "tiny": ModelPreset(
        name="tiny",
        image_size=32,
        vae=_vae((32, 64), 1, 32, scaling=1.0),
        unet=_unet((32, 64), 1, (True, False), 1, 16, 32),
        text_encoder="clip",
        clip_text_config=_clip(32, 2, 1, 64),
    ),
    # ldmkit's default model: 64x64 images -> 16x16x4 latents, ~13M-param UNet conditioned on MiniLM.
    "small64": ModelPreset(
        name="small64",
        image_size=64,
        vae=_vae((64, 128, 128), 1, 64, scaling=1.0),
        unet=_unet((64, 128, 256), (2, 4, 8), (True, True, False), 1, 16, 384),
        text_encoder="minilm",
        clip_text_config=_clip(384, 4, 6, 1536),
    ),
    # Stable Diffusion 1.5 (CompVis/runwayml configs); CLIP ViT-L/14 text tower.
    "sd15": ModelPreset(
        name="sd15",
        image_size=512,
        vae=_vae((128, 256, 512, 512), 2, 512, scaling=0.18215),
        unet=_unet((320, 640, 1280, 1280), 8, (True, True, True, False), 2, 64, 768),
        text_encoder="clip",
        clip_text_config=_clip(768, 12, 12, 3072),
    ),
    # Stable Diffusion 2.1 (768-v): OpenCLIP ViT-H/14 text tower (23 of 24 layers, as SD 2 uses).
    "sd21": ModelPreset(
        name="sd21",
        image_size=768,
        vae=_vae((128, 256, 512, 512), 2, 768, scaling=0.18215),
        unet=_unet(
            (320, 640, 1280, 1280), (5, 10, 20, 20), (True, True, True, False), 2, 96, 1024,
            use_linear_projection=True, upcast_attention=True,
        ),  # fmt: skip
        text_encoder="clip",
        clip_text_config=_clip(1024, 23, 16, 4096, act="gelu", proj=512),
        scheduler={**SD15_SCHEDULER, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"},
        clip_pad_token="!",
    ),
}


def get_preset(preset: str | ModelPreset) -> ModelPreset:
    """The preset named `preset` (or `preset` itself); unknown names list the known ones."""
    if isinstance(preset, ModelPreset):
        return preset
    if preset not in PRESETS:
        raise UsageError(f"unknown model preset {preset!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[preset]
