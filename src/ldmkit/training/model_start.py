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
    from ldmkit.models.folder import load_components, model_hash
    from ldmkit.models.presets import build_components

    if model.init_from is not None:
        from ldmkit.models.packaged import default_model_dir

        folder = default_model_dir() if model.init_from == "default" else Path(model.init_from)
        components = load_components(folder)
        own = components.meta.get("preset")
        if model.preset is not None and model.preset != own:
            raise UsageError(f"model.preset {model.preset} has no effect with model.init_from {model.init_from}, whose "
                             f"architecture is {own or 'not a named preset'}: drop model.preset, or train a fresh "
                             f"{model.preset} without model.init_from")
        _forget_the_start_record(components, model.init_from, model_hash(folder))
    else:
        components = build_components(model.preset or "tiny", seed=model.seed, text_encoder=model.text_encoder,
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


START_ONLY = ("name", "shipped", "reference_image", "metrics", "recipe", "stage_recipes", "dataset_cards",
              "training_eval")
"""ldmkit.json keys that describe the start model alone (its ship, evaluations and data): a model trained from it
is another model, so they move to `init_model` (name) or go (the new run records its own training and data)."""


def _forget_the_start_record(components, init_from: str, weights_hash: str) -> None:
    meta = components.meta
    meta["init_model"] = {"from": init_from, "model_hash": weights_hash, "name": meta.get("name")}
    for key in START_ONLY:
        meta.pop(key, None)


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
