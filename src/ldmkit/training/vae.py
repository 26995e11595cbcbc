"""`ldmkit train vae`: an AutoencoderKL trained with L1 + image-gradient L1 + a small KL (+ optional patch GAN).

    result = train_task("vae", load_recipe("configs/vae-shapes.yaml", VAERecipe), "runs/vae")  # ldmkit.training.trainers

No LPIPS (its VGG weights are not available offline): the structure term is the L1 distance between
image gradients. After training, the latent scaling factor is measured as 1 / std of the training
images' latents (Rombach et al. 2022, §G: "unit variance" rescaling) and written into vae.config, and
PSNR/SSIM on the val split go into ldmkit.json. RUN_DIR/final is a complete model folder.
`vae.tune: decoder` freezes the encoder of a trained start: the latents and their scaling factor stay the start's,
so a UNet trained on them keeps working with the new decoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ldmkit.data.augment import random_crops
from ldmkit.training.image_metrics import image_gradient_l1, psnr, ssim
from ldmkit.training.model_start import start_components, write_model_folder
from ldmkit.training.recipes import VAERecipe
from ldmkit.training.run_data import open_run_data

SCALE_SEED = 1234  # posterior samples of the scaling-factor measurement (fixed: the factor is reproducible)


class AutoencoderPass(nn.Module):
    """encode -> sample -> decode of an AutoencoderKL as one forward (so DDP can wrap it)."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, KL to N(0, I) summed over latent elements, per image)."""
        posterior = self.vae.encode(pixels).latent_dist
        z = posterior.mean + posterior.std * noise
        return self.vae.decode(z).sample, posterior.kl()


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (Isola et al. 2017): one real/fake logit per receptive-field patch.

    `calls` counts loss evaluations; it is a buffer so it is checkpointed and a resumed run starts the
    adversarial term at the same step as an uninterrupted one.
    """

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.GroupNorm(8, width * 2), nn.LeakyReLU(0.2)]
            width *= 2
        blocks.append(nn.Conv2d(width, 1, 3, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


def adversarial_terms(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator hinge loss, generator loss) in ONE graph for one optimizer: the discriminator sees
    detached fakes, and the generator term goes through a detached copy of the discriminator's weights,
    so each side only receives its own gradient."""
    from torch.func import functional_call

    d_loss = torch.relu(1 - disc(real)).mean() + torch.relu(1 + disc(fake.detach())).mean()
    inner = getattr(disc, "module", disc)  # DDP-wrapped or not
    frozen = {k: v.detach() for k, v in inner.state_dict(keep_vars=True).items()}
    g_loss = -functional_call(inner, frozen, (fake,)).mean()
    return d_loss, g_loss


def augmented(pixels: torch.Tensor, focus: torch.Tensor, augment, generator: torch.Generator) -> torch.Tensor:
    """Each image through a random resized crop that keeps its focal point, then colour jitter (recipe
    `augment`); the unchanged batch when both are off (no random draws then)."""
    from ldmkit.data.augment import augment_view

    if augment.crop_scale >= 1.0 and augment.jitter == 0:
        return pixels
    return torch.stack([augment_view(img, tuple(f.tolist()), generator, crop_scale=augment.crop_scale,
                                     jitter=augment.jitter) for img, f in zip(pixels, focus)])


class VAETask:
    """TrainTask of the autoencoder: modules {"vae"} (+ {"disc"} when the patch GAN is on)."""

    def __init__(self, recipe: VAERecipe, run_dir: str | Path) -> None:
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.components = start_components(recipe.model, recipe.data.image_size)
        run_data = open_run_data(recipe.data, self.run_dir)
        train, val, self.dataset_meta = run_data.train, run_data.val, run_data.provenance
        size = recipe.data.image_size
        self.crop = recipe.vae.crop or size
        if self.crop > size or self.crop % self.components.vae_scale_factor:
            raise_crop(self.crop, size, self.components.vae_scale_factor)
        from ldmkit.data.cache import preprocess_for, standardized_pixels

        preprocess = preprocess_for(recipe.data.trim)
        self.train_pixels, self.train_focus = standardized_pixels(train, size, preprocess)
        self.val_pixels = standardized_pixels(val, size, preprocess)[0] if len(val) else self.train_pixels[:8]
        self.components.vae.requires_grad_(True)
        if recipe.vae.tune == "decoder":
            freeze_encoder(self.components.vae, recipe.model)
        self.autoencoder = AutoencoderPass(self.components.vae)
        self.disc = None
        if recipe.vae.disc_start > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(recipe.model.seed + 3)
                self.disc = PatchDiscriminator()

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"vae": self.autoencoder}
        if self.disc is not None:
            mods["disc"] = self.disc
        return mods

    def num_samples(self) -> int:
        return len(self.train_pixels)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        aug = self.recipe.augment
        pixels = augmented(self.train_pixels[ids], self.train_focus[ids], aug, generator)
        pixels = random_crops(pixels, self.crop, generator, aug.flip_p)
        factor = self.components.vae_scale_factor
        latent = (len(ids), self.components.vae.config.latent_channels, self.crop // factor, self.crop // factor)
        return {"pixels": pixels, "noise": torch.randn(latent, generator=generator)}

    def loss(self, modules, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.recipe.vae
        x = batch["pixels"]
        rec, kl = modules["vae"](x, batch["noise"])
        l1 = (rec - x).abs().mean()
        structure = image_gradient_l1(rec, x)
        loss = l1 + cfg.gradient_weight * structure
        if cfg.tune == "all":  # a frozen encoder's KL is a constant
            loss = loss + cfg.kl_weight * kl.mean()
        metrics = {"l1": float(l1.detach()), "gradient_l1": float(structure.detach()), "kl": float(kl.detach().mean())}
        if "disc" in modules:
            calls = getattr(modules["disc"], "module", modules["disc"]).calls
            calls += 1
            steps_done = (int(calls) - 1) // self.recipe.train.grad_accum
            d_loss, g_loss = adversarial_terms(modules["disc"], x, rec)
            on = float(steps_done >= cfg.disc_start)  # both terms stay in the graph: DDP sees every parameter
            loss = loss + on * (d_loss + cfg.disc_weight * g_loss)
            metrics.update(disc_loss=float(d_loss.detach()), gen_adv=float(g_loss.detach()))
        return loss, metrics

    def reconstruction_metrics(self, pixels: torch.Tensor) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM of posterior-mean reconstructions of `pixels` ([-1, 1])."""
        vae = self.components.vae
        scores_p, scores_s = [], []
        with torch.no_grad():
            for chunk in pixels.split(16):
                chunk = chunk.to(vae.device)
                rec = vae.decode(vae.encode(chunk).latent_dist.mean).sample.clamp(-1, 1)
                a, b = (rec + 1) / 2, (chunk + 1) / 2
                scores_p.append(psnr(a, b))
                scores_s.append(ssim(a, b))
        return {"psnr": float(torch.cat(scores_p).mean()), "ssim": float(torch.cat(scores_s).mean())}

    def measure_scaling_factor(self) -> float:
        """1 / std of posterior samples of (up to scale_samples) training images."""
        vae = self.components.vae
        g = torch.Generator().manual_seed(SCALE_SEED)
        latents = []
        with torch.no_grad():
            for chunk in self.train_pixels[: self.recipe.vae.scale_samples].split(16):
                posterior = vae.encode(chunk.to(vae.device)).latent_dist
                noise = torch.randn(posterior.mean.shape, generator=g).to(vae.device)
                latents.append((posterior.mean + posterior.std * noise).float().cpu())
        return float(1.0 / torch.cat(latents).std())

    def validate(self, step: int, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        metrics = {"step": step, **self.reconstruction_metrics(self.val_pixels)}
        (path / "reconstruction.json").write_text(json.dumps(metrics, indent=2) + "\n")

    def save_final(self, path: Path) -> None:
        vae = self.components.vae
        vae.eval()
        if self.recipe.vae.tune == "decoder":  # the latents are the start's: so is their scale
            scale = float(vae.config.scaling_factor)
        else:
            scale = self.measure_scaling_factor()
            vae.register_to_config(scaling_factor=scale)
        metrics = {"val_" + k: v for k, v in self.reconstruction_metrics(self.val_pixels).items()}
        write_model_folder(self.components, path, self.recipe,
                           {"trainer": "vae", "vae_metrics": {**metrics, "scaling_factor": scale},
                            "dataset": self.dataset_meta})


def freeze_encoder(vae, model) -> None:
    """Train only the decoder side of a trained VAE: encoder and quant_conv keep their weights."""
    from ldmkit.errors import UsageError

    if model.init_from is None and model.vae_from is None:
        raise UsageError("vae.tune decoder fine-tunes the decoder of a trained VAE: set model.init_from (or "
                         "model.vae_from) to the model folder whose encoder stays as it is")
    for part in (vae.encoder, vae.quant_conv):
        if part is not None:
            part.requires_grad_(False)


def raise_crop(crop: int, size: int, factor: int) -> None:
    from ldmkit.errors import UsageError

    raise UsageError(f"vae.crop {crop} must be at most data.image_size {size} and a multiple of the VAE factor {factor}")
