"""`ldmkit train unet`: a text-conditional UNet trained on cached VAE latents and text states.

    result = train_task("unet", load_recipe("configs/tiny.yaml", UNetRecipe), "runs/tiny")  # ldmkit.training.trainers
    ldmkit train unet --config configs/dreambooth-full-tiny.yaml --set dreambooth.instance_data=DIR --out runs/db

At start the train split is encoded once (VAE posterior mean/std + one text state per caption) into
RUN_DIR/cache through `ldmkit.data.cache`; each step then draws one caption per image at random,
drops it for the empty prompt with probability `caption_dropout` (so classifier-free guidance has an
unconditional branch), samples the latent posterior, noises it and regresses epsilon or v with
optional Min-SNR-gamma weights. RUN_DIR/final and every checkpoint's model/ subfolder
(RUN_DIR/checkpoints/step-N/model, EMA weights when EMA is on) are complete model folders.

With a `dreambooth` section instead of `data` this is full-fine-tune DreamBooth (Ruiz et al. 2023): the whole
UNet trains on the subject images (and the class images the base model draws for prior preservation, at the base
model's image size; ldmkit.training.dreambooth), the text encoder and VAE stay frozen, each batch holds
train.batch_size subject images plus as many class images, and loss = instance loss + prior_loss_weight * class
loss. `train lora` (ldmkit.training.lora_task) reuses this start, batch and loss with adapters on a frozen UNet.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.training.model_start import start_components, write_model_folder
from ldmkit.training.objective import min_snr_weights, offset_noise, per_sample_mse, q_sample, velocity
from ldmkit.training.recipes import DataSection, DreamBoothSection, UNetRecipe, UNetSection
from ldmkit.training.run_data import open_run_data, weights_id

CACHE_FOLDER = "cache"
MAX_CACHED_LATENT_BYTES = 16 * 2**30
"""Latent means + stds of every view are held in memory while training: refuse a cache larger than this."""


def training_scheduler_config(config: dict[str, Any], unet) -> dict[str, Any]:
    """The scheduler config the trained model ships with (and trains on): the recipe's prediction type and
    schedule in a diffusers class that can represent them (UsageError, before any training, if the recipe's
    unet.scheduler cannot); zero terminal SNR samples with trailing spacing (Lin et al. 2023 §3.3)."""
    from ldmkit.diffusion.scheduler_classes import trained_scheduler_config

    return trained_scheduler_config(config, prediction_type=unet.prediction_type,
                                    zero_terminal_snr=unet.zero_terminal_snr, beta_schedule=unet.beta_schedule,
                                    beta_start=unet.beta_start, beta_end=unet.beta_end, scheduler=unet.scheduler)


class UNetTask:
    """TrainTask of the UNet: modules {"unet"}; batches of cached latents + text states (of `data`, or of the
    DreamBooth subject + class images)."""

    def __init__(self, recipe: UNetRecipe, run_dir: str | Path) -> None:
        self.recipe, self.run_dir = recipe, Path(run_dir)
        obj, db = recipe.unet, recipe.dreambooth
        # DreamBooth trains at the base model's own image size (None)
        self.components = start_components(recipe.model, recipe.data.image_size if db is None else None)
        c = self.components
        scheduler_config = training_scheduler_config(c.scheduler_config, obj)  # a UsageError comes before any work
        self.prior_rows = self.rows = None
        if db is None:
            run_data = open_run_data(recipe.data, self.run_dir, class_conditional=obj.class_conditional)
            self.train, self.val, self.dataset_meta = run_data.train, run_data.val, run_data.provenance
            self.cache = build_latent_cache(c, self.train, self.run_dir / CACHE_FOLDER, recipe.data.image_size,
                                            recipe=recipe)
            self.rows = self._repeated_rows(obj.repeats)
        else:
            self._start_dreambooth(db)  # the class images come from the base model as it is (its own scheduler)
        c.scheduler_config = scheduler_config
        self.alphas_cumprod = NoiseSchedule.from_scheduler_config(c.scheduler_config).alphas_cumprod()
        self.num_timesteps = len(self.alphas_cumprod)
        self.null_text = c.text_encoder.encode([""])[0].float()  # the empty prompt CFG contrasts with
        self.dual_encoder = self.attributes = None
        if obj.eval_clip is not None and recipe.train.validate_every:  # now, not at the first validation hours later
            self._load_eval_instruments(obj)
        c.unet.requires_grad_(True)
        c.vae.requires_grad_(False)
        c.text_encoder.model.requires_grad_(False)

    def _load_eval_instruments(self, obj: UNetSection) -> None:
        """The dual encoder (unet.eval_clip) and attribute classifier (unet.eval_attributes) that score every
        validation; the val split must hold 2+ images for retrieval to rank anything."""
        from ldmkit.errors import UsageError
        from ldmkit.models.attributes import load_attribute_classifier
        from ldmkit.models.dual_encoder import load_dual_encoder

        if len(self.val) < 2:
            raise UsageError(f"unet.eval_clip needs at least 2 val images to rank captions; the val split has "
                             f"{len(self.val)} (raise data.val_fraction)")
        self.dual_encoder = load_dual_encoder(obj.eval_clip)
        if obj.eval_attributes is not None:
            self.attributes = load_attribute_classifier(obj.eval_attributes)

    def _start_dreambooth(self, section: DreamBoothSection) -> None:
        """The train split: the subject images + the class images the base model draws now (before any training,
        reused on resume); no val split; their latent cache, with the instance folder standing in for `data`."""
        from ldmkit.training.dreambooth import PriorRows, dreambooth_dataset

        c, size = self.components, self.components.image_size
        dataset, self.dataset_meta = dreambooth_dataset(c, section, self.run_dir, size)
        self.train, self.val = dataset, dataset.subset([])
        # the cache reads data.trim / augment / train.seed
        as_data = dataclasses.replace(self.recipe, dreambooth=None,
                                      data=DataSection(path=str(dataset.root), image_size=size))
        self.cache = build_latent_cache(c, dataset, self.run_dir / CACHE_FOLDER, size, recipe=as_data)
        self.prior_rows = PriorRows(self.cache.image_ids)

    def _repeated_rows(self, repeats: tuple[dict, ...]) -> list[int] | None:
        """The cache rows of one epoch with unet.repeats applied (None: each row once)."""
        if not repeats:
            return None
        from ldmkit.training.sampler import repeated_rows

        labels = {s.image_id: s.labels for s in self.train.samples}
        return repeated_rows([labels[i] for i in self.cache.image_ids], repeats)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.components.unet}

    def num_samples(self) -> int:
        """What the loop's data order runs over: the cached images (each as often as unet.repeats says), or with
        DreamBooth the subject images."""
        if self.prior_rows is not None:
            return len(self.prior_rows.instance)
        return len(self.rows) if self.rows is not None else len(self.cache)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Scaled latent samples and their conditioning (one random caption each, some dropped to the empty
        prompt); with DreamBooth the subject images `ids` plus as many class images (`is_class` marks them)."""
        is_class = torch.zeros(len(ids), dtype=torch.bool)
        if self.prior_rows is not None:
            ids, is_class = self.prior_rows.rows(ids, generator)
        elif self.rows is not None:
            ids = [self.rows[i] for i in ids]
        obj = self.recipe.unet
        cached = self.cache.batch(ids, generator, sample=obj.latent_sample, flip_p=self.recipe.augment.flip_p)
        drop = torch.rand(len(ids), generator=generator) < obj.caption_dropout  # (B,)
        out = {"latents": cached.latents * self.components.scaling_factor, "dropped": drop, "is_class": is_class}
        return {**out, **self.text_batch(cached, drop)}

    def text_batch(self, cached, drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"text": cached text states (B, L, D)}, the empty prompt's where `drop`."""
        # (B,) -> (B, 1, 1) against text states (B, L, D); the null prompt's (L, D) -> (B, L, D)
        return {"text": torch.where(drop.view(-1, 1, 1), self.null_text.expand_as(cached.text), cached.text)}

    def text_states(self, modules, batch) -> torch.Tensor:
        """The UNet's encoder_hidden_states (B, L, D) of a batch."""
        return batch["text"]

    def loss(self, modules, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Min-SNR-weighted denoising MSE averaged over the batch (objective.denoising_loss); with DreamBooth
        the subject rows' mean + prior_loss_weight * the class rows' mean (dreambooth.prior_preservation_loss)."""
        obj = self.recipe.unet
        x0 = batch["latents"]  # (B, C, h, w), scaled latents
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # (B, C, h, w)
        noise = offset_noise(noise, obj.noise_offset, generator)
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)  # (B,)
        x_t = q_sample(x0, noise, t, self.alphas_cumprod)  # (B, C, h, w)
        prediction = modules["unet"](x_t, t, encoder_hidden_states=self.text_states(modules, batch)).sample
        target = velocity(x0, noise, t, self.alphas_cumprod) if obj.prediction_type == "v_prediction" else noise
        weights = min_snr_weights(t, self.alphas_cumprod, obj.min_snr_gamma, obj.prediction_type)  # (B,)
        per_sample = weights * per_sample_mse(prediction, target)  # (B,)
        metrics = {"caption_dropped": float(batch["dropped"].float().mean())}
        if self.prior_rows is None:
            return per_sample.mean(), metrics
        from ldmkit.training.dreambooth import prior_preservation_loss

        loss, parts = prior_preservation_loss(per_sample, batch["is_class"], self.recipe.dreambooth.prior_loss_weight)
        return loss, {**metrics, **parts}

    def validate(self, step: int, path: Path) -> None:
        """A model folder of the current (EMA) weights and a grid of validation prompts under `path`."""
        write_model_folder(self.components, Path(path) / "model", self.recipe, {"step": step,
                                                                                "dataset": self.dataset_meta})
        save_prompt_grid(self.components, self.validation_prompts(), Path(path) / "samples.png",
                         steps=self.recipe.unet.validation_steps)
        samples = spread(self.val.samples, self.recipe.unet.eval_prompts)
        if self.dual_encoder is not None and len(samples) >= 2:  # held-out captions only; retrieval needs 2+
            from ldmkit.training.run_eval import append_eval_row, evaluate_alignment

            row = evaluate_alignment(self.components, self.dual_encoder, [s.captions[0] for s in samples],
                                     steps=self.recipe.unet.validation_steps, attributes=self.attributes,
                                     labels=[s.labels for s in samples])
            append_eval_row(self.run_dir, step, row)

    def validation_prompts(self) -> list[str]:
        """unet.validation_prompts; else the instance (+ class) prompt with DreamBooth, else 4 val captions."""
        prompts, db = list(self.recipe.unet.validation_prompts), self.recipe.dreambooth
        if not prompts and db is not None:
            prompts = [db.instance_prompt, *([db.class_prompt] if db.class_prompt.strip() else [])]
        elif not prompts:
            source = self.val.samples or self.train.samples
            prompts = [s.captions[0] for s in source[:4]]
        return prompts

    def export(self, step: int, path: Path) -> None:
        """The checkpoint's model folder (checkpoints/step-N/model/): loads with Pipeline.from_pretrained."""
        write_model_folder(self.components, path, self.recipe, {"trainer": "unet", "step": step, **self._eval_meta()})

    def save_final(self, path: Path) -> None:
        write_model_folder(self.components, path, self.recipe, {"trainer": "unet", **self._eval_meta()})

    def _eval_meta(self) -> dict[str, Any]:
        """ldmkit.json's `dataset` (the data trained on, see data_provenance) and the in-training evaluation
        rows so far (`training_eval`; `ldmkit eval` reports them)."""
        from ldmkit.training.run_eval import read_eval_rows

        rows = read_eval_rows(self.run_dir)
        meta = {"dataset": self.dataset_meta}  # the data actually trained on, classes included (`model info`)
        return {**meta, "training_eval": rows} if rows else meta


def spread(items: list, k: int) -> list:
    """k items evenly spaced over `items` (all of them when there are no more than k): a split sorted by
    folder, as a mixture's is, gives each of its sources its share rather than the first source only."""
    if len(items) <= k:
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def view_augmenter(augment, seed: int):
    """augment_view for the latent cache: view v of an image is a random resized crop + colour jitter drawn
    from a generator seeded by (train.seed, image id, v), so a rebuilt cache holds the same views."""
    import hashlib

    from ldmkit.data.augment import augment_view

    def make_view(pixels, focus, sample, view: int):
        digest = hashlib.sha256(f"{seed}/{sample.image_id}/{view}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return augment_view(pixels, focus, g, crop_scale=augment.crop_scale, jitter=augment.jitter)

    return make_view


def check_cache_size(images: int, aug, latent_shape) -> None:
    """UsageError before any encoding when the cached latents (every view, mirrors) would not fit in memory."""
    import math

    size = images * aug.views * (2 if aug.flip_p > 0 else 1) * 2 * math.prod(latent_shape) * 4
    if size > MAX_CACHED_LATENT_BYTES:
        from ldmkit.errors import UsageError

        raise UsageError(f"the latent cache would hold {size / 2**30:.1f} GiB ({images} images x {aug.views} views"
                         f"{' x 2 mirrored' if aug.flip_p > 0 else ''}); the limit is "
                         f"{MAX_CACHED_LATENT_BYTES / 2**30:.0f} GiB: lower augment.views")


def build_latent_cache(components, dataset, cache_dir: Path, image_size: int, recipe: UNetRecipe | None = None):
    """CachedLatents of `dataset` under the components' VAE and text encoder (reused when unchanged), with
    the recipe's trimming policy and augmented views (`augment`)."""
    from ldmkit.config.training import UNetAugmentSection
    from ldmkit.data.cache import CacheSpec, build_cache, preprocess_for

    vae, text = components.vae, components.text_encoder

    def encode_images(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return posterior.mean.float(), posterior.std.float()

    def encode_text(captions: list[str]) -> torch.Tensor:
        return text.encode(captions).float()

    aug = recipe.augment if recipe is not None else UNetAugmentSection()
    seed = recipe.train.seed if recipe is not None else 0
    check_cache_size(len(dataset), aug, components.latent_shape(image_size))
    spec = CacheSpec(image_encoder=f"vae-{weights_id(vae)}", text_encoder=f"{text.kind}-{weights_id(text.model)}",
                     size=image_size, flip_variants=aug.flip_p > 0, views=aug.views,
                     augment_id=f"crop_scale={aug.crop_scale},jitter={aug.jitter},seed={seed}" if aug.views > 1 else "")
    bar = CacheBar(len(dataset), enabled=recipe is None or recipe.train.progress_bar)
    try:
        return build_cache(dataset, cache_dir, encode_images=encode_images, encode_text=encode_text, spec=spec,
                           preprocess=preprocess_for(recipe.data.trim if recipe is not None else None),
                           augment_view=view_augmenter(aug, seed) if aug.views > 1 else None, progress=bar.update)
    finally:
        bar.close()


class CacheBar:
    """A tqdm bar on stderr for a latent cache being built (the first process only), opened at its first
    batch: a reused cache shows nothing."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.bar = total, None
        self.enabled = enabled and os.environ.get("RANK", "0") == "0"

    def update(self, images: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="caching latents and text states", unit="image", file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.update(images)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def save_prompt_grid(components, prompts: list[str], path: Path, *, steps: int) -> None:
    """One image per prompt (seed i for prompt i), side by side in one PNG."""
    from PIL import Image

    from ldmkit.pipeline import Pipeline

    # on the UNet's device (the VAE and text encoder follow it); train modes and requires_grad are left alone
    pipe = Pipeline(components, device=next(components.unet.parameters()).device)
    images = [pipe(p, steps=steps, seed=i).images[0] for i, p in enumerate(prompts)]
    if not images:
        return
    w, h = images[0].size
    grid = Image.new("RGB", (w * len(images), h))
    for i, image in enumerate(images):
        grid.paste(image, (i * w, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
