"""Model presets and `build_components` (random init); the preset table itself is ldmkit.models.preset_table.

Note on diffusers naming: in UNet2DConditionModel `attention_head_dim` is (for legacy reasons)
the number of *heads*; the per-head width is channels / that number. Our own presets keep the
per-head width >= 32 at every level.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ldmkit.errors import UsageError
from ldmkit.models.preset_table import PRESETS, SD15_SCHEDULER, ModelPreset, get_preset

__all__ = ["PRESETS", "SD15_SCHEDULER", "ModelPreset", "build_components", "build_text_encoder", "get_preset"]


def build_text_encoder(preset: ModelPreset, choice: str | None, *, seed: int) -> "TextEncoder":  # noqa: F821
    """Text encoder for `preset`: `choice` is "clip", "minilm", a local model folder, or None (preset default)."""
    from ldmkit.models.text import minilm_text_encoder, random_clip_text_encoder

    choice = choice or preset.text_encoder
    if choice == "minilm":
        return minilm_text_encoder()
    if choice == "clip":
        return random_clip_text_encoder(preset.clip_text_config, seed=seed, pad_token=preset.clip_pad_token)
    if Path(choice).is_dir():
        from ldmkit.models.folder import load_text_encoder

        return load_text_encoder(Path(choice))
    raise UsageError(
        f"the text encoder must be 'clip', 'minilm' or an existing model folder; {choice!r} is none of these"
    )


def build_components(
    preset: str | ModelPreset, *, seed: int = 0, text_encoder: str | None = None, latent_channels: int | None = None
) -> "Components":  # noqa: F821
    """Random-init components of `preset`, identical for the same seed (the global RNG is left untouched).

    The UNet's cross_attention_dim follows the text encoder's width, so any text encoder fits.
    `latent_channels` replaces the preset's 4 in the VAE's latents and the UNet's input and output
    (more channels keep more detail through the autoencoder at the same latent size, as SD3's 16 do).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ldmkit.models.components import Components

    p = get_preset(preset)
    unet_cfg, vae_cfg = {**p.unet}, {**p.vae}
    if latent_channels is not None:
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
            raise UsageError(f"latent channels must be an integer >= 1, got {latent_channels!r}")
        unet_cfg.update(in_channels=latent_channels, out_channels=latent_channels)
        vae_cfg.update(latent_channels=latent_channels)
    text = build_text_encoder(p, text_encoder, seed=seed + 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**unet_cfg, "cross_attention_dim": text.hidden_size})
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**vae_cfg)
    meta = {"preset": p.name, "seed": seed, "image_size": p.image_size, "text_encoder": text.kind}
    return Components(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text,
        scheduler_config=copy.deepcopy(p.scheduler),
        meta=meta,
    )
