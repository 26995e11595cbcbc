"""Every recipe in configs/ loads into its trainer's recipe class; a VAE run feeds a UNet run (vae_from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.recipes import (AttributesRecipe, ClipRecipe, DataSection, EmbeddingRecipe, LoraRecipe,
                                     UNetRecipe, VAERecipe)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _recipe_class(path: Path):
    name = path.name.removeprefix("default-")
    for prefix, cls in (("vae", VAERecipe), ("clip", ClipRecipe), ("attributes", AttributesRecipe),
                        ("lora", LoraRecipe), ("dreambooth-full", UNetRecipe), ("dreambooth", LoraRecipe),
                        ("embedding", EmbeddingRecipe)):
        if name.startswith(prefix):
            return cls
    return UNetRecipe


def _is_stages_file(path: Path) -> bool:
    import yaml

    return "stages" in yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if not _is_stages_file(p)), ids=lambda p: p.name)
def test_every_config_loads(path):  # the multi-stage (stages:) files are tested in test_stages.py
    recipe = load_recipe(path, _recipe_class(path))
    assert recipe.train.steps >= 1 and (recipe.data.image_size >= 16 if recipe.data is not None else recipe.dreambooth)


def test_required_recipes_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"tiny.yaml", "shapes-32.yaml", "emoji-64.yaml", "avatars-64.yaml"} <= names


def test_recipe_errors_name_the_key():
    with pytest.raises(UsageError, match="data.path is required"):
        DataSection()
    with pytest.raises(UsageError, match="unet.caption_dropout"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.caption_dropout=1.5"])
    with pytest.raises(UsageError, match="prediction_type"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.prediction_type=x0"])
    with pytest.raises(UsageError, match="model.latent_channels must be >= 1"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["model.latent_channels=0"])
    with pytest.raises(UsageError, match="cannot change model.init_from's architecture"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["model.latent_channels=8", "model.init_from=somewhere"])


def test_unet_run_uses_a_trained_vae_and_its_scaling_factor(tmp_path):
    from ldmkit.models.folder import load_components
    from ldmkit.training.unet import UNetTask
    from ldmkit.training.trainers import train_task

    torch.set_num_threads(1)
    common = ["data.builtin_n=12", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=0",
              "train.progress_bar=false"]
    vae_run = train_task("vae", load_recipe(CONFIGS / "vae-shapes.yaml", VAERecipe, common), tmp_path / "vae")
    trained = load_components(vae_run.final_dir).vae
    recipe = load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, [*common, f"model.vae_from={vae_run.final_dir}"])
    task = UNetTask(recipe, tmp_path / "unet")
    assert task.components.scaling_factor == pytest.approx(trained.config.scaling_factor) != 1.0
    for key, value in trained.state_dict().items():
        assert torch.equal(task.components.vae.state_dict()[key], value)
    # the cache holds that VAE's posterior means
    from ldmkit.training.run_data import load_pixels

    with torch.no_grad():
        mean = trained.encode(load_pixels(task.train, 32, recipe.data.trim)[:2]).latent_dist.mean
    torch.testing.assert_close(task.cache.batch([0, 1], torch.Generator(), sample=False).latents, mean,
                               rtol=1e-4, atol=1e-4)


def test_eight_latent_channels_from_vae_to_generated_image(tmp_path):
    """model.latent_channels=8: a VAE run, a UNet run on its latents (vae_from), a generated image."""
    from ldmkit.pipeline import Pipeline
    from ldmkit.training.trainers import train_task

    torch.set_num_threads(1)
    common = ["data.builtin_n=12", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=0",
              "train.progress_bar=false", "model.latent_channels=8"]
    vae_run = train_task("vae", load_recipe(CONFIGS / "vae-shapes.yaml", VAERecipe, common), tmp_path / "vae")
    unet_run = train_task("unet", load_recipe(CONFIGS / "tiny.yaml", UNetRecipe,
                                      [*common, f"model.vae_from={vae_run.final_dir}"]), tmp_path / "unet")
    pipe = Pipeline.from_pretrained(unet_run.final_dir)
    result = pipe("a red square", steps=2, seed=0)
    assert result.latents.shape[1] == 8 and result.images[0].size == (32, 32)
    # a 4-channel UNet refuses the 8-channel VAE with the reason
    with pytest.raises(UsageError, match="its VAE has 8 latent channels, the UNet expects 4"):
        train_task("unet", load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, [*common[:-1], f"model.vae_from={vae_run.final_dir}"]),
                   tmp_path / "unet4")
