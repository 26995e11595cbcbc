"""Issue 12.6: augmentation reaches the UNet and VAE trainers (flips with mirrored captions, cached views),
keys without effect are refused, and resume stays bitwise exact with augmentation on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.recipes import UNetRecipe, VAERecipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
VAE_SHAPES = ROOT / "configs" / "vae-shapes.yaml"
FAST = ["train.steps=3", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "train.log_every=1", "data.val_fraction=0.0", "unet.latent_sample=false", "unet.caption_dropout=0.0"]


def _sided_dataset(root: Path, n: int = 4) -> Path:
    """Images red on the left half, blue on the right, captioned so; 32 px squares (no trimming)."""
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        pixels = np.zeros((32, 32, 3), np.uint8)
        pixels[:, :16] = (220, 30, 30)
        pixels[:, 16:] = (30, 30, 220)
        pixels[i * 4:(i + 1) * 4, :, 1] = 200  # images differ a little
        Image.fromarray(pixels).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "red on the left, blue on the Right"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def _vae_recipe(data: Path, *overrides: str) -> VAERecipe:
    return load_recipe(VAE_SHAPES, VAERecipe, [*FAST[:5], "data.val_fraction=0.0", "data.image_size=32",
                                               f"data.path={data}", "data.builtin=null", *overrides])


def _unet_recipe(data: Path, *overrides: str) -> UNetRecipe:
    return load_recipe(TINY, UNetRecipe, [*FAST, f"data.path={data}", "data.builtin=null", *overrides])


def test_unet_trainer_sees_mirrored_images_with_mirrored_captions(tmp_path):
    """Not a mirrored latent: the VAE encoding of the mirrored image, with 'left' and 'right' swapped."""
    from ldmkit.training.unet import UNetTask

    torch.set_num_threads(1)
    data = _sided_dataset(tmp_path / "ds")
    task = UNetTask(_unet_recipe(data, "augment.flip_p=0.5"), tmp_path / "run")
    c = task.components
    vae, text = c.vae, c.text_encoder
    paths = [Path(p) for p in task.cache.paths]
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32)).permute(2, 0, 1)
                          for p in paths]) / 127.5 - 1
    with torch.no_grad():
        plain = vae.encode(pixels).latent_dist.mean * c.scaling_factor
        mirrored = vae.encode(torch.flip(pixels, dims=(-1,))).latent_dist.mean * c.scaling_factor
        caption = text.encode(["red on the left, blue on the Right"]).float()[0]
        swapped = text.encode(["red on the right, blue on the Left"]).float()[0]
    assert not torch.allclose(mirrored, torch.flip(plain, dims=(-1,)), atol=1e-4)  # the VAE is not equivariant
    g = torch.Generator().manual_seed(0)
    flips = []
    for _ in range(10):
        batch = task.batch([0, 1, 2, 3], g)
        for i, lat in enumerate(batch["latents"]):
            if torch.allclose(lat, mirrored[i], atol=1e-5):
                flips.append(True)
                torch.testing.assert_close(batch["text"][i], swapped, atol=2e-3, rtol=1e-3)
            else:
                torch.testing.assert_close(lat, plain[i], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(batch["text"][i], caption, atol=2e-3, rtol=1e-3)
                flips.append(False)
    assert 10 <= sum(flips) <= 30  # p = 0.5 of 40


def test_unet_views_are_random_crops_that_reach_training(tmp_path):
    from ldmkit.training.unet import UNetTask

    torch.set_num_threads(1)
    data = _sided_dataset(tmp_path / "ds", n=2)
    task = UNetTask(_unet_recipe(data, "augment.crop_scale=0.5", "augment.views=3", "augment.jitter=0.2"),
                    tmp_path / "run")
    assert task.cache.views == 3
    g = torch.Generator().manual_seed(0)
    seen = {}
    for _ in range(20):
        batch = task.cache.batch([0], g, sample=False)
        seen.setdefault(batch.view[0], batch.latents[0])
    assert sorted(seen) == [0, 1, 2]
    assert not torch.allclose(seen[0], seen[1]) and not torch.allclose(seen[1], seen[2])


def test_keys_without_effect_are_errors(tmp_path):
    with pytest.raises(UsageError, match="views"):
        load_recipe(TINY, UNetRecipe, ["augment.views=4"])
    with pytest.raises(UsageError, match="views >= 2"):
        load_recipe(TINY, UNetRecipe, ["augment.crop_scale=0.8"])
    with pytest.raises(UsageError, match="no effect"):
        load_recipe(TINY, UNetRecipe, ["data.trim.fit=pad", "data.trim.focus=face"])
    with pytest.raises(UsageError, match="unknown key"):
        load_recipe(VAE_SHAPES, VAERecipe, ["augment.views=2"])  # the VAE trainer augments every step, uncached
    with pytest.raises(UsageError, match="jitter"):
        load_recipe(TINY, UNetRecipe, ["augment.jitter=1.5", "augment.views=2"])


def test_a_cache_too_big_for_memory_is_refused_before_encoding():
    from ldmkit.config.training import UNetAugmentSection
    from ldmkit.training.unet import check_cache_size

    aug = UNetAugmentSection(flip_p=0.5, crop_scale=0.8, views=64)
    check_cache_size(1000, aug, (4, 16, 16))  # 1000 x 64 x 2 x 2 x 4 KiB = 1 GiB: fine
    with pytest.raises(UsageError, match="augment.views"):
        check_cache_size(100_000, aug, (4, 64, 64))


def test_vae_trainer_flip_p_and_focus_keeping_crops(tmp_path):
    from ldmkit.training.vae import VAETask

    torch.set_num_threads(1)
    data = _sided_dataset(tmp_path / "ds", n=2)
    never = VAETask(_vae_recipe(data, "augment.flip_p=0"), tmp_path / "a")
    always = VAETask(_vae_recipe(data, "augment.flip_p=1"), tmp_path / "b")
    a = never.batch([0, 1], torch.Generator().manual_seed(0))["pixels"]
    b = always.batch([0, 1], torch.Generator().manual_seed(0))["pixels"]
    torch.testing.assert_close(a, never.train_pixels[[0, 1]])
    torch.testing.assert_close(b, torch.flip(never.train_pixels[[0, 1]], dims=(-1,)))
    cropped = VAETask(_vae_recipe(data, "augment.flip_p=0", "augment.crop_scale=0.5"), tmp_path / "c")
    c = cropped.batch([0, 1], torch.Generator().manual_seed(0))["pixels"]
    assert c.shape == a.shape and not torch.allclose(c, a)


def _train_unet(recipe, run_dir, kill_at=None):
    from ldmkit.training.loop import train
    from ldmkit.training.unet import UNetTask

    task = UNetTask(recipe, run_dir)
    sys.modules["ldmkit_tests_toy_task"].kill_at_loss_call(task, kill_at)  # loaded by the toy fixture
    return train(task, recipe.train, run_dir, recipe=recipe)


@pytest.mark.slow
def test_resume_is_bitwise_exact_with_augmentation_on(toy, tmp_path):
    """SIGKILL in step 5 of 6 (checkpoint at 3), resume: final weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    data = _sided_dataset(tmp_path / "ds", n=6)
    recipe = _unet_recipe(data, "augment.flip_p=0.5", "augment.crop_scale=0.6", "augment.views=2",
                          "augment.jitter=0.1", "train.steps=6", "train.checkpoint_every=3",
                          "unet.latent_sample=true", "unet.caption_dropout=0.2")
    _train_unet(recipe, tmp_path / "ref")
    assert toy.run_in_child(lambda: _train_unet(recipe, tmp_path / "run", kill_at=5)) == -9
    result = _train_unet(recipe, tmp_path / "run")
    assert result.resumed_from_step == 3 and result.step == 6
    for path in sorted((tmp_path / "ref" / "final").rglob("*.safetensors")):
        other = tmp_path / "run" / "final" / path.relative_to(tmp_path / "ref" / "final")
        ref, got = load_file(str(path)), load_file(str(other))
        assert ref.keys() == got.keys()
        for key in ref:
            assert torch.equal(ref[key], got[key]), f"{path.name}:{key} differs after resume"
