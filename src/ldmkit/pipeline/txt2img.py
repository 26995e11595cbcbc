"""Text-to-image and image-to-image: components + sampler + denoiser, composed for inference.

    pipe = Pipeline.from_pretrained("model/")
    result = pipe("a red circle", steps=20, seed=1, num_images=2)
    result.images[0].save("out.png")

Initial noise is drawn as diffusers draws it (a CPU torch.Generator per image seeded with seed + k,
scaled by the scheduler's initial sigma), so the same components, scheduler and seed give the same
image as diffusers' StableDiffusionPipeline, and image k of a batch equals a single run with seed + k.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldmkit.diffusion.denoiser import CFGDenoiser, Denoiser, TimestepMap
from ldmkit.diffusion.registry import build_steps, get_sampler, initial_noise_scale, sampler_function
from ldmkit.diffusion.samplers import Step, gaussian_like
from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.errors import LdmkitError, UsageError
from ldmkit.pipeline.trajectory import Trajectory, TrajectoryRecorder

log = logging.getLogger(__name__)

DEFAULTS = {"sampler": "dpmpp_2m", "steps": 25, "guidance": 7.5, "guidance_rescale": 0.0}


@dataclass(frozen=True)
class GenerationParams:
    """Everything needed to reproduce an image; written into each PNG."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance: float
    guidance_rescale: float
    seed: int
    width: int
    height: int
    strength: float | None = None
    model_hash: str = ""
    model_name: str = ""


@dataclass
class GenerationResult:
    """One type for every call: images, the seeds that made them, and optionally the trajectory."""

    images: list[Image.Image]
    seeds: list[int]
    params: GenerationParams
    latents: torch.Tensor
    trajectory: Trajectory | None = None
    warnings: list[str] = field(default_factory=list)


def latent_factor(vae) -> int:
    """Pixels per latent cell: 2 ** (number of VAE downsampling blocks - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] NCHW tensor -> PIL images, rounding exactly as diffusers' image processor does."""
    arr = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]


def to_pixels(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


class Pipeline:
    """Inference over one set of components (unet, vae, text encoder, schedule)."""

    def __init__(self, components, device: str | torch.device = "cpu", unet_dtype: torch.dtype | None = None,
                 compile: bool = False):
        """Fast paths: `unet_dtype=torch.bfloat16` runs the UNet in bf16 (sampling math stays fp32);
        `compile=True` compiles it with torch.compile + inductor weight freezing (tens of seconds once,
        then several times faster per step: worth it for many images, see docs/benchmarks.md)."""
        self.components = components
        self.device = torch.device(device)
        if unet_dtype is not None:
            components.unet.to(unet_dtype)
        for m in (components.unet, components.vae, components.text_encoder.model):
            m.to(self.device)
        self._unet_forward = components.unet
        self._unet_dtype = components.unet.dtype
        if compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant-fold the (frozen) weights into the graph
            self._unet_forward = torch.compile(components.unet)
        self.unet, self.vae, self.text_encoder = components.unet, components.vae, components.text_encoder
        self.schedule = NoiseSchedule.from_scheduler_config(components.scheduler_config)
        self.prediction_type = components.scheduler_config.get("prediction_type", "epsilon")
        self.factor = latent_factor(self.vae)
        self._hash: str | None = None
        for m in (self.unet, self.vae, self.text_encoder.model):
            m.eval().requires_grad_(False)

    @classmethod
    def default(cls, **kwargs) -> "Pipeline":
        """The default model shipped inside the package (`ldmkit generate` without --model)."""
        from ldmkit.models.packaged import default_model_dir

        return cls.from_pretrained(default_model_dir(), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, allow_pickle: bool = False, device: str = "cpu",
                        unet_dtype: torch.dtype | None = None, compile: bool = False) -> Pipeline:
        from ldmkit.models.folder import load_components

        return cls(load_components(Path(path), allow_pickle=allow_pickle), device=device, unet_dtype=unet_dtype,
                   compile=compile)

    def save_pretrained(self, path: str | Path) -> None:
        from ldmkit.models.folder import save_components

        save_components(self.components, Path(path))

    @property
    def model_hash(self) -> str:
        if self._hash is None:
            from ldmkit.models.folder import model_hash

            source = self.components.source
            self._hash = model_hash(source) if source is not None else "unsaved"
        return self._hash

    def defaults(self) -> dict:
        """Sampling defaults: ldmkit.json's `sampling` section over ours."""
        return {**DEFAULTS, **self.components.meta.get("sampling", {})}

    def default_size(self) -> int:
        meta_size = self.components.meta.get("image_size")
        return int(meta_size) if meta_size else int(self.unet.config.sample_size) * self.factor

    # -- the three stages ---------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str], warnings: list[str]) -> torch.Tensor:
        for p in dict.fromkeys(prompts):
            msg = self._truncation_warning(p)
            if msg:
                log.warning(msg)
                warnings.append(msg)
        return self.text_encoder.encode(prompts).to(self.device)

    def _truncation_warning(self, prompt: str) -> str | None:
        dropped = self.text_encoder.dropped_tokens(prompt)
        if not dropped:
            return None
        return (f"prompt longer than the text encoder's {self.text_encoder.max_length} tokens: "
                f"{dropped} token(s) dropped from {prompt[:40]!r}...")

    def model_fn(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = self._unet_dtype
        # return_dict=False skips building diffusers' output dataclass on every step (~3% at small sizes)
        (out,) = self._unet_forward(x_in.to(dtype), t.to(self.device), encoder_hidden_states=context.to(dtype),
                                    return_dict=False)
        return out.to(x_in.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VP latents -> pixels in [-1, 1]."""
        z = latents / self.vae.config.scaling_factor
        return self.vae.decode(z.to(self.vae.dtype)).sample.float()

    def encode_image(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        """Image -> VAE posterior mean latents (deterministic, so strength 0 is a pure round trip)."""
        if image.size != (width, height):
            image = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        return self.encode_pixels(to_pixels(image))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] NCHW pixels -> scaled VAE posterior mean latents (the inverse of `decode`, up to the VAE)."""
        pixels = pixels.to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean.float() * self.vae.config.scaling_factor

    # -- the call -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        steps: int | None = None,
        guidance: float | None = None,
        guidance_rescale: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        init_image: Image.Image | None = None,
        strength: float = 0.8,
        trajectory: bool = False,
        trajectory_every: int = 1,
        progress: bool = False,
    ) -> GenerationResult:
        if init_image is not None and (height is None and width is None):
            width, height = init_image.size
        if num_images < 1:
            raise UsageError(f"number of images must be >= 1, got {num_images}")
        seeds = [seed + k for k in range(num_images)]
        recorder = TrajectoryRecorder(every=trajectory_every) if trajectory else None
        latents, images, params, warnings = self._sample(
            [prompt] * num_images, seeds, negative_prompt, steps, guidance, guidance_rescale, sampler, height, width,
            init_image, strength, recorder, progress)
        traj = recorder.finish(self.decode) if recorder is not None else None
        return GenerationResult(images, seeds, params, latents, traj, warnings)

    @torch.no_grad()
    def generate_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        negative_prompt: str = "",
        steps: int | None = None,
        guidance: float | None = None,
        guidance_rescale: float | None = None,
        sampler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
    ) -> list[GenerationResult]:
        """Image i from prompts[i] and seeds[i], all in one sampling run (one UNet batch per step).

        Result i is `pipe(prompts[i], seed=seeds[i], ...)` up to the float rounding of a batched UNet
        (each image keeps its own noise generator), warnings included: those of its own prompt and of the
        negative prompt. Much faster than one call per image on a CPU.
        """
        if isinstance(prompts, str):
            raise UsageError("generate_batch takes a list of prompts, got one string (use pipe(prompt) for one)")
        if not prompts or len(prompts) != len(seeds):
            raise UsageError(f"generate_batch needs a non-empty list of prompts and one seed per prompt, "
                             f"got {len(prompts)} prompt(s) and {len(seeds)} seed(s)")
        latents, images, params, warnings = self._sample(
            list(prompts), [int(s) for s in seeds], negative_prompt, steps, guidance, guidance_rescale, sampler,
            height, width, None, 0.8, None, progress)
        own = {prompt: [w for w in warnings if w in (self._truncation_warning(prompt),
                                                     self._truncation_warning(negative_prompt))]
               for prompt in dict.fromkeys(prompts)}
        return [GenerationResult([image], [seed], replace(params, prompt=prompt, seed=seed), latents[i:i + 1],
                                 None, list(own[prompt]))
                for i, (prompt, seed, image) in enumerate(zip(prompts, seeds, images))]

    def _sample(self, prompts, seeds, negative_prompt, steps, guidance, guidance_rescale, sampler, height, width,
                init_image, strength, recorder, progress):
        """Sample len(prompts) images, image i from prompts[i] with its own generator seeded seeds[i]."""
        d = self.defaults()
        steps = int(d["steps"] if steps is None else steps)
        guidance = float(d["guidance"] if guidance is None else guidance)
        guidance_rescale = float(d["guidance_rescale"] if guidance_rescale is None else guidance_rescale)
        spec = get_sampler(d["sampler"] if sampler is None else sampler)
        height, width = height or self.default_size(), width or self.default_size()
        self._check(steps, guidance, height, width, strength if init_image is not None else None)

        cfg = self.components.scheduler_config
        spacing = cfg.get("timestep_spacing", "leading")
        sigma_steps = build_steps(spec, self.schedule, steps, spacing=spacing,
                                  steps_offset=int(cfg.get("steps_offset", 0)),
                                  final_alpha_one=bool(cfg.get("set_alpha_to_one", True)))
        warnings: list[str] = []
        # encode each distinct prompt once and gather, as diffusers' encode_prompt does (num_images_per_prompt)
        row_of = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        rows = torch.tensor([row_of[p] for p in prompts], device=self.device)
        cond = self.encode_prompts(list(row_of), warnings)[rows]
        n = len(prompts)
        uncond = self.encode_prompts([negative_prompt], warnings).repeat(n, 1, 1) if guidance != 1.0 else cond
        denoise = CFGDenoiser(Denoiser(self.model_fn, self.prediction_type, TimestepMap(self.schedule, sigma_steps)),
                              cond, uncond, guidance, guidance_rescale)

        generators = [torch.Generator().manual_seed(s) for s in seeds]
        shape = (n, self.unet.config.in_channels, height // self.factor, width // self.factor)
        if init_image is None:
            noise = gaussian_like(torch.empty(shape, device=self.device), generators)
            x = noise * initial_noise_scale(spec, float(sigma_steps.sigmas[0]), spacing)
        else:  # img2img (SDEdit, Meng et al. 2022): noise the image's latents to the strength's level
            start = steps - min(int(steps * strength), steps)
            sigma_steps = sigma_steps.tail(start)
            x0 = self.encode_image(init_image, width, height).expand(shape)
            x = x0 + gaussian_like(x0, generators) * sigma_steps.sigmas[0]

        bar = _progress_bar(len(sigma_steps), progress)

        def on_step(step: Step):
            if not torch.isfinite(step.denoised).all():
                raise LdmkitError(f"non-finite latents at step {step.index + 1} (sigma {step.sigma:.4g}); "
                                  "the model weights or the sampler settings are broken")
            if recorder is not None:
                recorder(step)
            if bar is not None:
                bar.update(1)

        run = sampler_function(spec)
        x = run(denoise, x, sigma_steps.sigmas.to(self.device), generator=generators, callback=on_step)
        if bar is not None:
            bar.close()
        if not torch.isfinite(x).all():
            raise LdmkitError("non-finite latents at the end of sampling")
        latents = x / (1 + sigma_steps.sigmas[-1] ** 2) ** 0.5  # VE -> the VP latents the VAE expects
        images = to_pil(self.decode(latents))
        params = GenerationParams(prompts[0], negative_prompt, steps, spec.name, guidance, guidance_rescale, seeds[0],
                                  width, height, strength if init_image is not None else None,
                                  self.model_hash, self.components.meta.get("name", ""))
        return latents, images, params, warnings

    def _check(self, steps, guidance, height, width, strength):
        T = self.schedule.num_train_timesteps
        if not 1 <= steps <= min(1000, T):
            raise UsageError(f"steps must be in 1..{min(1000, T)}, got {steps}")
        if guidance < 0:
            raise UsageError(f"guidance must be >= 0, got {guidance}")
        for name, v in (("height", height), ("width", width)):
            if v <= 0 or v % self.factor:
                raise UsageError(f"{name} {v} is not a positive multiple of the VAE factor {self.factor}")
        if strength is not None and not 0.0 <= strength <= 1.0:
            raise UsageError(f"strength must be in [0, 1], got {strength}")


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sampling", unit="step", leave=False)
