"""The components a trainer starts from, and writing trained components as a model folder."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from ldmkit.config.recipe import to_dict
from ldmkit.errors import UsageError
from ldmkit.training.recipes import ModelSection


def start_components(model: ModelSection, image_size: int | None):
    """`model.init_from`'s components, or a fresh `model.preset` seeded with `model.seed`, set to train at
    `image_size` (None: the model's own image size)."""
    from ldmkit.models.folder import load_components
    from ldmkit.models.presets import build_components

    if model.init_from == "default":  # the shipped default model
        from ldmkit.models.packaged import default_model_dir

        components = load_components(default_model_dir())
    elif model.init_from is not None:
        components = load_components(Path(model.init_from))
    else:
        components = build_components(model.preset, seed=model.seed, text_encoder=model.text_encoder,
                                      latent_channels=model.latent_channels)
    if model.vae_from is not None:
        vae = load_components(Path(model.vae_from)).vae
        if vae.config.latent_channels != components.latent_channels:
            raise UsageError(f"model.vae_from {model.vae_from}: its VAE has {vae.config.latent_channels} latent "
                             f"channels, the UNet expects {components.latent_channels}")
        components.vae = vae
    factor = components.vae_scale_factor
    image_size = components.image_size if image_size is None else image_size
    if image_size % factor:
        raise UsageError(f"data.image_size {image_size} must be a multiple of the VAE's factor {factor}")
    components.meta["image_size"] = image_size
    return components


def write_model_folder(components, path: Path, recipe: Any, extra_meta: dict[str, Any] | None = None) -> None:
    """Save `components` as a complete model folder at `path` (replacing an earlier save there)."""
    from ldmkit.models.folder import save_components
    from ldmkit.pipeline.settings import DEFAULT_SAMPLING

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)  # our own earlier (possibly half-written) save in the run folder
    meta = {**components.meta, "training": to_dict(recipe), **(extra_meta or {})}
    # The scheduler class written is the one that can hold the trained schedule (e.g. DDPM for sigmoid betas),
    # not a choice of sampler: a model trained here samples with ldmkit's default unless its meta says otherwise.
    meta.setdefault("sampling", {"sampler": DEFAULT_SAMPLING["sampler"]})
    save_components(dataclasses.replace(components, meta=meta), path)  # the in-memory meta stays as it was
