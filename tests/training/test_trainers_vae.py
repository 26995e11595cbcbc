"""The VAE trainer: metrics against closed forms, a short run that learns and measures its scaling factor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.image_metrics import image_gradient_l1, psnr, ssim
from ldmkit.training.recipes import VAERecipe
from ldmkit.training.run_data import load_pixels
from ldmkit.training.trainers import train_task
from ldmkit.training.vae import PatchDiscriminator, adversarial_terms

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "vae-shapes.yaml"


def test_psnr_closed_form():
    a = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    torch.testing.assert_close(psnr(a, a + 0.1), torch.full((2,), 20.0))  # MSE 0.01 -> 20 dB


def test_ssim_identity_constants_and_monotone():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 16, 16, generator=g)
    torch.testing.assert_close(ssim(a, a), torch.ones(1))
    # constant images: no variance, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    torch.testing.assert_close(ssim(torch.full((1, 3, 8, 8), 0.2), torch.full((1, 3, 8, 8), 0.6)), torch.tensor([expected]))
    noisy = [float(ssim(a, (a + s * torch.randn(a.shape, generator=g)).clamp(0, 1))) for s in (0.05, 0.2, 0.5)]
    assert noisy[0] > noisy[1] > noisy[2]


def test_gradient_loss_ignores_a_constant_shift():
    a = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(image_gradient_l1(a + 0.3, a)) < 1e-6
    assert float(image_gradient_l1(torch.flip(a, dims=(-1,)), a)) > 0.1


def test_adversarial_terms_send_each_gradient_to_its_own_side():
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=8, layers=2)
    real = torch.rand(2, 3, 16, 16)
    fake = torch.rand(2, 3, 16, 16, requires_grad=True)
    d_loss, g_loss = adversarial_terms(disc, real, fake)
    g_loss.backward()
    assert fake.grad is not None and all(p.grad is None for p in disc.parameters())
    fake.grad = None
    d_loss.backward()
    assert fake.grad is None and all(p.grad is not None for p in disc.parameters())


def test_crop_larger_than_the_image_is_refused(tmp_path):
    recipe = load_recipe(RECIPE, VAERecipe, ["data.builtin_n=8", "vae.crop=64"])
    with pytest.raises(UsageError, match="vae.crop"):
        train_task("vae", recipe, tmp_path / "run")


def test_vae_run_learns_and_sets_the_scaling_factor_from_data(tmp_path):
    from ldmkit.data import CaptionDataset
    from ldmkit.models.folder import load_components
    from ldmkit.models.presets import build_components
    from ldmkit.training.run_data import split

    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE, VAERecipe, [
        "data.builtin_n=32", "train.steps=60", "train.batch_size=8", "train.warmup_steps=0", "train.lr=0.002",
        "train.checkpoint_every=0", "train.validate_every=0", "train.progress_bar=false", "vae.crop=16",
    ])
    result = train_task("vae", recipe, tmp_path / "run")
    assert result.step == 60
    final = load_components(result.final_dir)
    initial = build_components("tiny", seed=0)
    train = split(CaptionDataset.open(tmp_path / "run" / "dataset"), recipe.data, "train")
    x = load_pixels(train, 32, recipe.data.trim)  # framed as the trainer framed them

    def reconstruction_l1(vae) -> float:
        with torch.no_grad():
            return float((vae.decode(vae.encode(x).latent_dist.mean).sample - x).abs().mean())

    assert reconstruction_l1(final.vae) < 0.92 * reconstruction_l1(initial.vae)
    # the factor makes the training latents unit-variance (the placeholder was 1.0)
    factor = final.scaling_factor
    assert factor != 1.0 and final.meta["vae_metrics"]["scaling_factor"] == pytest.approx(factor)
    with torch.no_grad():
        post = final.vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    assert float((z * factor).std()) == pytest.approx(1.0, rel=0.03)
    metrics = final.meta["vae_metrics"]
    assert math.isfinite(metrics["val_psnr"]) and 0 < metrics["val_ssim"] <= 1
    assert json.loads((tmp_path / "run" / "trainer.json").read_text()) == {"trainer": "vae"}


def test_decoder_tune_needs_a_trained_start_and_refuses_settings_without_effect(tmp_path):
    recipe = load_recipe(RECIPE, VAERecipe, ["data.builtin_n=8", "vae.tune=decoder"])
    with pytest.raises(UsageError, match="vae.tune decoder fine-tunes the decoder of a trained VAE"):
        train_task("vae", recipe, tmp_path / "run")
    for setting in ("vae.kl_weight=0.001", "vae.scale_samples=8"):
        with pytest.raises(UsageError, match="has no effect with vae.tune decoder"):
            load_recipe(RECIPE, VAERecipe, ["vae.tune=decoder", setting])
    with pytest.raises(UsageError, match="'vae.tune' must be one of 'all', 'decoder'"):
        load_recipe(RECIPE, VAERecipe, ["vae.tune=encoder"])


def test_decoder_tune_keeps_every_latent_and_the_scaling_factor(tmp_path):
    """Only decoder + post_quant_conv change: the start's UNet still reads the same latents at the same scale."""
    from ldmkit.models.folder import load_components, save_components
    from ldmkit.models.presets import build_components

    torch.set_num_threads(1)
    start = build_components("tiny", seed=0)
    start.vae.register_to_config(scaling_factor=0.75)
    save_components(start, tmp_path / "start")
    recipe = load_recipe(RECIPE, VAERecipe, [
        "data.builtin_n=32", "train.steps=30", "train.batch_size=8", "train.warmup_steps=0", "train.lr=0.002",
        "train.checkpoint_every=0", "train.validate_every=0", "train.progress_bar=false", "vae.crop=16",
        f"model.init_from={tmp_path / 'start'}", "model.preset=null", "vae.tune=decoder",
    ])
    result = train_task("vae", recipe, tmp_path / "run")
    final = load_components(result.final_dir)
    before, after = start.vae.state_dict(), final.vae.state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    tuned = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and tuned and len(frozen) + len(tuned) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert sum(not torch.equal(before[k], after[k]) for k in tuned) > len(tuned) // 2
    assert final.scaling_factor == 0.75 and final.meta["vae_metrics"]["scaling_factor"] == 0.75
    assert all(torch.equal(v, final.unet.state_dict()[k]) for k, v in start.unet.state_dict().items())
