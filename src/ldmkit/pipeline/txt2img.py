"""Text-to-image and image-to-image: components + sampler + denoiser, composed for inference.

    pipe = Pipeline.from_pretrained("model/")
    result = pipe("a red circle", steps=20, seed=1, num_images=2)
    result.images[0].save("out.png")

Initial noise is drawn as diffusers draws it (a CPU torch.Generator per image seeded with seed + k,
scaled by the scheduler's initial sigma), so the same components, scheduler and seed give the same
image as diffusers' StableDiffusionPipeline, and image k of a batch equals a single run with seed + k.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from ldmkit.data.images import to_pil, to_pixels
from ldmkit.diffusion.denoiser import CFGDenoiser, Denoiser, TimestepMap
from ldmkit.diffusion.registry import build_steps, get_sampler, initial_noise_scale, sampler_function
from ldmkit.diffusion.scheduler_fields import effective_config, read_scheduler_fields
from ldmkit.diffusion.samplers import Step, gaussian_like
from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.errors import LdmkitError, UsageError
from ldmkit.pipeline import limits
from ldmkit.pipeline.img2img import fit_image, fit_size, noised_start
from ldmkit.pipeline.settings import DEFAULT_SAMPLING, DEFAULT_STRENGTH, SamplingSettings, check_text
from ldmkit.pipeline.result import GenerationParams, GenerationResult, with_adapters  # noqa: F401 (re-exported)
from ldmkit.pipeline.trajectory import TrajectoryRecorder, merge_trajectories

log = logging.getLogger(__name__)


def _inference(method):
    """Run a Pipeline method under torch.no_grad with its modules in eval mode; every submodule's mode is
    restored afterwards (a UNet that is training stays in train mode, with its requires_grad flags)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        roots = (self.unet, self.vae, self.text_encoder.model)
        modes = [(m, m.training) for root in roots for m in root.modules()]
        for root in roots:
            root.eval()
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            for m, mode in modes:
                m.training = mode

    return run


class Pipeline:
    """Inference over one set of components (unet, vae, text encoder, schedule)."""

    def __init__(self, components, device: str | torch.device | None = None, unet_dtype: torch.dtype | None = None,
                 compile: bool = False):
        """Samples with `components` as they are: their modules' train/eval modes and requires_grad flags are
        left alone (each call runs under no_grad with the modules in eval mode, and restores their modes).
        Changed in place only when asked, as `nn.Module.to` does: `device` moves every module there (None:
        stay where the UNet is), `unet_dtype=torch.bfloat16` casts the UNet (sampling math stays fp32).
        `compile=True` compiles the UNet with torch.compile + inductor weight freezing for this module only
        (tens of seconds once, then several times faster per step: see docs/benchmarks.md)."""
        self.components = components
        self.device = torch.device(device) if device is not None else next(components.unet.parameters()).device
        if unet_dtype is not None:
            components.unet.to(unet_dtype)
        if device is not None:
            for m in (components.unet, components.vae, components.text_encoder.model):
                m.to(self.device)
        self._unet_forward = components.unet
        self._unet_dtype = components.unet.dtype
        if compile:  # constant-fold the weights into the graph: a patch of this compile's config, not a global
            self._unet_forward = torch.compile(components.unet, options={"freezing": True})
        self.unet, self.vae, self.text_encoder = components.unet, components.vae, components.text_encoder
        self.schedule = NoiseSchedule.from_scheduler_config(components.scheduler_config)
        self.prediction_type = components.scheduler_config.get("prediction_type", "epsilon")
        self.factor = components.vae_scale_factor
        self._hash: str | None = None
        self.sampling_memory = limits.SAMPLING_MEMORY_BYTES  # estimated bytes one sampling run may use

    @classmethod
    def default(cls, **kwargs) -> "Pipeline":
        """The default model shipped inside the package (`ldmkit generate` without --model)."""
        from ldmkit.models.packaged import default_model_dir

        return cls.from_pretrained(default_model_dir(), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, allow_pickle: bool = False, device: str = "cpu",
                        unet_dtype: torch.dtype | None = None, compile: bool = False,
                        preset: str | None = None) -> Pipeline:
        """A model folder, or one original-layout SD checkpoint file (`preset`: its architecture, when the
        file does not tell)."""
        from ldmkit.models.folder import load_components

        components = load_components(Path(path), allow_pickle=allow_pickle, preset=preset)
        for m in (components.unet, components.vae, components.text_encoder.model):  # ours alone: frozen
            m.eval().requires_grad_(False)
        return cls(components, device=device, unet_dtype=unet_dtype, compile=compile)

    def save_pretrained(self, path: str | Path) -> None:
        from ldmkit.models.folder import save_components

        save_components(self.components, Path(path))

    from ldmkit.pipeline.embedding import load_embedding  # Pipeline.load_embedding(path, token=None) (issue 16)
    from ldmkit.pipeline.embedding import unload_embeddings  # Pipeline.unload_embeddings(): all of them
    # -- LoRA files (issue 16; the work is in ldmkit.pipeline.lora) --------------------------------

    def load_lora(self, path: str | Path, scale: float = 1.0) -> list[str]:
        """Apply a LoRA file (kohya, PEFT or diffusers layout) at `scale`, unfused; several files add up.
        Returns the reader's warnings (e.g. a missing alpha taken as the rank)."""
        from ldmkit.pipeline.lora import lora_state

        return lora_state(self).load(path, scale)

    def fuse_lora(self) -> None:
        """Fold the loaded LoRA files into the weights (faster sampling; `unload_lora` still restores them)."""
        from ldmkit.pipeline.lora import lora_state

        lora_state(self).fuse()

    def unload_lora(self) -> None:
        """Remove every LoRA file: the base weights exactly."""
        from ldmkit.pipeline.lora import lora_state

        lora_state(self).unload()

    @property
    def model_hash(self) -> str:
        if self._hash is None:
            from ldmkit.models.folder import model_hash

            source = self.components.source
            self._hash = model_hash(source) if source is not None else "unsaved"
        return self._hash

    def defaults(self) -> dict:
        """Sampling defaults: ldmkit.json's `sampling` section, over the sampler matching the folder's own
        scheduler (PNDM -> pndm for SD 1.x folders), over ours."""
        from ldmkit.diffusion.registry import sampler_for_scheduler

        own = sampler_for_scheduler(self.components.scheduler_config)
        return {**DEFAULT_SAMPLING, **({"sampler": own} if own else {}), **self.components.meta.get("sampling", {})}

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
        return self.encode_pixels(to_pixels(fit_image(image, width, height)))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[-1, 1] NCHW pixels -> scaled VAE posterior mean latents (the inverse of `decode`, up to the VAE)."""
        pixels = pixels.to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean.float() * self.vae.config.scaling_factor

    # -- the request ----------------------------------------------------------------------------

    def resolve(self, settings: SamplingSettings, init_image: Image.Image | None = None
                ) -> tuple[SamplingSettings, list[str]]:
        """`settings` with every None filled in from this model, seed -1 drawn, and the checks that need the
        model done (VAE factor, training timesteps, sampler options); plus notes for the user. Allocates nothing."""
        s, notes = settings.with_seed(), []
        if init_image is None and s.strength is not None:
            raise UsageError("strength has no effect without an init image (--init-image)")
        width, height = s.width, s.height
        if init_image is not None and width is None and height is None:
            width, height = fit_size(init_image.size, self.components.image_size, self.factor, notes)
        width, height = width or self.components.image_size, height or self.components.image_size
        for name, v in (("height", height), ("width", width)):
            if v % self.factor:
                raise UsageError(f"{name} {v} is not a positive multiple of the VAE factor {self.factor}")
        T = self.schedule.num_train_timesteps
        d = self.defaults()
        steps = int(d["steps"] if s.steps is None else s.steps)
        if not 1 <= steps <= min(limits.MAX_STEPS, T):
            raise UsageError(f"steps must be in 1..{min(limits.MAX_STEPS, T)}, got {steps}")
        s = replace(s, steps=steps, width=width, height=height,
                    sampler=d["sampler"] if s.sampler is None else s.sampler,
                    guidance=float(d["guidance"] if s.guidance is None else s.guidance),
                    guidance_rescale=float(d["guidance_rescale"] if s.guidance_rescale is None else s.guidance_rescale),
                    strength=None if init_image is None else DEFAULT_STRENGTH if s.strength is None else s.strength,
                    timestep_spacing=s.timestep_spacing or self._folder_spacing(d["sampler"] if s.sampler is None
                                                                                else s.sampler))
        self._sigma_steps(s)  # unsupported sampler options (e.g. karras) fail here, before any allocation
        return s, notes

    def images_per_run(self, s: SamplingSettings) -> int:
        """How many images of resolved settings `s` one sampling run takes (limits.bytes_per_image estimate)."""
        per_image = limits.bytes_per_image(
            s.width, s.height, factor=self.factor, vae_channels=int(self.vae.config.block_out_channels[0]),
            unet_channels=int(max(self.unet.config.block_out_channels)),
            latent_channels=int(self.unet.config.in_channels), guided=s.guidance != 1.0)
        return limits.images_per_run(per_image, self.sampling_memory)

    def _folder_spacing(self, sampler: str) -> str:
        """The timestep spacing the model folder's scheduler config gives `sampler` (diffusers' from_config rule)."""
        return effective_config(self.components.scheduler_config, get_sampler(sampler))["timestep_spacing"]

    def _scheduler_fields(self, s: SamplingSettings):
        """The folder's scheduler config as s.sampler reads it; unsupported fields are refused, naming them."""
        return read_scheduler_fields(self.components.scheduler_config, get_sampler(s.sampler),
                                     spacing=s.timestep_spacing, karras=s.karras or None)

    def _sigma_steps(self, s: SamplingSettings):
        f = self._scheduler_fields(s)
        return build_steps(get_sampler(s.sampler), f.schedule(), s.steps, spacing=f.spacing, karras=f.karras,
                           steps_offset=f.steps_offset, final_alpha_one=f.final_alpha_one)

    # -- the call -----------------------------------------------------------------------------

    @_inference
    def __call__(self, prompt: str, settings: SamplingSettings | None = None, *,
                 init_image: Image.Image | None = None, trajectory: bool = False, trajectory_every: int = 1,
                 progress: bool = False, **fields) -> GenerationResult:
        """settings.num_images images of `prompt`, image k from seed + k, sampled in runs that fit the memory
        estimate. Without `settings`, keyword `fields` make them: pipe(p, steps=20) is
        pipe(p, SamplingSettings(steps=20)); both at once is an error."""
        settings = _settings(settings, fields)
        check_text(prompt, "prompt")
        if isinstance(trajectory_every, bool) or not isinstance(trajectory_every, int) or trajectory_every < 1:
            raise UsageError(f"--trajectory-every must be an integer >= 1, got {trajectory_every!r}")
        s, notes = self.resolve(settings, init_image)
        seeds, per_run = s.seeds(), self.images_per_run(s)
        latents, images, warnings, trajectories, params = [], [], [], [], None
        for at in range(0, len(seeds), per_run):
            chunk = seeds[at:at + per_run]
            recorder = TrajectoryRecorder(every=trajectory_every) if trajectory else None
            x, imgs, p, w = self._sample([prompt] * len(chunk), chunk, s, init_image, recorder, progress)
            latents.append(x)
            images += imgs
            warnings += [m for m in w if m not in warnings]
            params = params or p
            if recorder is not None:
                trajectories.append(recorder.finish(self.decode))
        traj = merge_trajectories(trajectories) if trajectory else None
        return GenerationResult(images, seeds, params, torch.cat(latents), traj, warnings, notes)

    @_inference
    def generate_batch(self, prompts: list[str], seeds: list[int], settings: SamplingSettings | None = None, *,
                       init_image: Image.Image | None = None, progress: bool = False, on_step=None,
                       on_denoised=None, **fields) -> list[GenerationResult]:
        """Image i from prompts[i] and seeds[i], sampled together (one UNet batch per step, as many images per
        run as the memory estimate allows); settings (or keyword fields) as for `__call__`.

        Result i is `pipe(prompts[i], seed=seeds[i], init_image=init_image, ...)` up to the float rounding of
        a batched UNet (each image keeps its own noise generator), warnings included: those of its own prompt
        and of the negative prompt. Much faster than one call per image on a CPU. `on_step(i, n)`, if given,
        is called after sampling step i of n of each run (the server's progress and cancel: it may raise to
        stop); before it, `on_denoised(i, n, rows, x0)` gets the run's current clean-latent estimate
        (x0 [len(rows), C, h, w], decodable with `decode`; `rows` are the indices into `prompts`) for previews.
        """
        settings = _settings(settings, fields)
        if isinstance(prompts, str):
            raise UsageError("generate_batch takes a list of prompts, got one string (use pipe(prompt) for one)")
        if not prompts or len(prompts) != len(seeds):
            raise UsageError(f"generate_batch needs a non-empty list of prompts and one seed per prompt, "
                             f"got {len(prompts)} prompt(s) and {len(seeds)} seed(s)")
        if settings.num_images != 1:
            raise UsageError("generate_batch makes one image per (prompt, seed): num_images has no effect here")
        for prompt in prompts:
            check_text(prompt, "prompt")
        seeds = [replace(settings, seed=seed).seed for seed in seeds]  # each checked as --seed is (0..2^64-1)
        if -1 in seeds:
            raise UsageError("generate_batch needs explicit seeds (-1, random, is for one request)")
        s, _ = self.resolve(settings, init_image)
        per_run = self.images_per_run(s)
        results = []
        for at in range(0, len(prompts), per_run):
            chunk_prompts, chunk_seeds = list(prompts[at:at + per_run]), seeds[at:at + per_run]
            rows = range(at, at + len(chunk_seeds))
            hook = None if on_denoised is None else functools.partial(on_denoised, rows=rows)
            latents, images, params, warnings = self._sample(chunk_prompts, chunk_seeds, s, init_image, None, progress,
                                                             on_step, hook)
            own = {prompt: [w for w in warnings if w in (self._truncation_warning(prompt),
                                                         self._truncation_warning(s.negative_prompt))]
                   for prompt in dict.fromkeys(chunk_prompts)}
            results += [GenerationResult([image], [seed], replace(params, prompt=prompt, seed=seed), latents[i:i + 1],
                                         None, list(own[prompt]))
                        for i, (prompt, seed, image) in enumerate(zip(chunk_prompts, chunk_seeds, images))]
        return results

    def _sample(self, prompts, seeds, s: SamplingSettings, init_image, recorder, progress, on_step=None,
                on_denoised=None):
        """One sampling run: len(prompts) images, image i from prompts[i] with its own generator seeded seeds[i];
        `s` is resolved (`resolve`)."""
        spec = get_sampler(s.sampler)
        sigma_steps = self._sigma_steps(s)
        warnings: list[str] = []
        # encode each distinct prompt once and gather, as diffusers' encode_prompt does (num_images_per_prompt)
        row_of = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        rows = torch.tensor([row_of[p] for p in prompts], device=self.device)
        cond = self.encode_prompts(list(row_of), warnings)[rows]  # [P distinct, L, D] -> [n, L, D]
        n = len(prompts)
        # [1, L, D] -> [n, L, D]: CFGDenoiser batches [uncond; cond] as one [2n, L, D] UNet context
        uncond = self.encode_prompts([s.negative_prompt], warnings).repeat(n, 1, 1) if s.guidance != 1.0 else cond
        fields = self._scheduler_fields(s)  # clip_sample / thresholding limit x0 in the denoiser (DDIM: the sampler)
        denoiser = Denoiser(self.model_fn, fields.prediction_type, TimestepMap(fields.schedule(), sigma_steps),
                            fields.denoiser_x0_transform)
        denoise = CFGDenoiser(denoiser, cond, uncond, s.guidance, s.guidance_rescale)

        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        shape = (n, self.unet.config.in_channels, s.height // self.factor, s.width // self.factor)  # [n, C, h, w]
        if init_image is None:
            noise = gaussian_like(torch.empty(shape, device=self.device), generators)
            x = noise * initial_noise_scale(spec, float(sigma_steps.sigmas[0]), s.timestep_spacing)
        else:  # img2img (SDEdit): the image's latents noised to the strength's level
            x0 = self.encode_image(init_image, s.width, s.height).expand(shape)
            x, sigma_steps = noised_start(x0, generators, sigma_steps, s.steps, s.strength)

        bar = _progress_bar(len(sigma_steps), progress)

        def step_callback(step: Step):  # not `on_step`: that name is the caller's (i, n) hook
            if not torch.isfinite(step.denoised).all():
                raise LdmkitError(f"non-finite latents at step {step.index + 1} (sigma {step.sigma:.4g}); "
                                  "the model weights or the sampler settings are broken")
            if recorder is not None:
                recorder(step)
            if bar is not None:
                bar.update(1)
            if on_denoised is not None:
                on_denoised(step.index + 1, len(sigma_steps), x0=step.denoised)
            if on_step is not None:
                on_step(step.index + 1, len(sigma_steps))

        run = sampler_function(spec, fields.sampler_options)
        x = run(denoise, x, sigma_steps.sigmas.to(self.device), generator=generators, callback=step_callback)
        if bar is not None:
            bar.close()
        if not torch.isfinite(x).all():
            raise LdmkitError("non-finite latents at the end of sampling")
        latents = x / (1 + sigma_steps.sigmas[-1] ** 2) ** 0.5  # VE -> the VP latents the VAE expects
        images = to_pil(self.decode(latents))
        own_spacing = self._folder_spacing(spec.name)
        params = GenerationParams(prompts[0], s.negative_prompt, s.steps, spec.name, s.guidance, s.guidance_rescale,
                                  seeds[0], s.width, s.height, s.strength if init_image is not None else None,
                                  self.model_hash, self.components.meta.get("name", ""), karras=s.karras,
                                  timestep_spacing=None if s.timestep_spacing == own_spacing else s.timestep_spacing)
        return latents, images, with_adapters(params, self), warnings  # LoRA/embedding record (issue 16)


def _settings(settings: SamplingSettings | None, fields: dict) -> SamplingSettings:
    """The settings object, or one built from keyword fields (never both: one way to say each thing)."""
    if settings is None:
        return SamplingSettings(**fields)
    if not isinstance(settings, SamplingSettings):
        raise UsageError(f"settings must be a SamplingSettings, got {type(settings).__name__}")
    if fields:
        raise UsageError(f"give SamplingSettings or keyword settings, not both (got {', '.join(fields)} as well)")
    return settings


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sampling", unit="step", leave=False)
