"""The typed sampling request: every setting of one generation, checked once, before any model loads.

    settings = SamplingSettings(steps=20, guidance=5.0, seed=-1, num_images=4, width=64, height=64)
    result = pipe("a red circle", settings)          # or pipe("a red circle", steps=20, ...): the same check

`None` means "the model's default" (its ldmkit.json `sampling` section, else ours; the size from the
model; the timestep spacing from its scheduler config). What depends on the model (the VAE factor, the
model's training timesteps) is checked by `Pipeline.resolve` before anything is allocated. Used by
`ldmkit generate`, `ldmkit eval`, batch generation and (later) the server. No torch import here.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace

from ldmkit.errors import UsageError
from ldmkit.pipeline import limits

DEFAULT_SAMPLING = {"sampler": "dpmpp_2m", "steps": 25, "guidance": 7.5, "guidance_rescale": 0.0}
"""ldmkit's defaults under a model's own (its ldmkit.json `sampling` section)."""
DEFAULT_STRENGTH = 0.8
"""img2img strength when an init image is given without one."""


def check_text(text: object, what: str) -> str:
    """A prompt-like string: at most MAX_PROMPT_CHARS characters of valid Unicode (no lone surrogates,
    which is how undecodable bytes in argv or a file arrive in Python). Returns it unchanged."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be text, got {type(text).__name__}")
    if len(text) > limits.MAX_PROMPT_CHARS:
        raise UsageError(f"{what} has {len(text)} characters; at most {limits.MAX_PROMPT_CHARS} are allowed "
                         "(the text encoder reads only its first ~77 tokens anyway)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(f"{what} is not valid UTF-8 text (undecodable byte or lone surrogate at character "
                         f"{err.start}); pass UTF-8") from None
    return text


def _number(value: object, flag: str, kind: type) -> None:
    """bool is not a number here; floats must be finite (nan/inf name the flag, not the model)."""
    ok = (float, int) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, ok):
        raise UsageError(f"{flag} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: everything of a request but the prompt(s) and the init image itself."""

    negative_prompt: str = ""
    """What to steer away from (the unconditional branch of classifier-free guidance)."""
    steps: int | None = None
    """Denoising steps, 1..MAX_STEPS (None: the model's default)."""
    sampler: str | None = None
    """Sampler name from `ldmkit samplers` (None: the model's default)."""
    guidance: float | None = None
    """Classifier-free guidance scale, finite and >= 0; 1 runs the conditional branch only (None: default)."""
    guidance_rescale: float | None = None
    """Guidance rescale phi in [0, 1] (Lin et al. 2023) (None: default)."""
    seed: int = 0
    """Seed of the first image, 0..2^64-1; image k uses seed + k. -1 draws a random seed (`with_seed`)."""
    num_images: int = 1
    """Images to make, 1..MAX_IMAGES; sampled in runs that fit the memory estimate."""
    width: int | None = None
    """Image width in pixels, a positive multiple of the VAE factor (None: the model's size or the init image's)."""
    height: int | None = None
    """Image height in pixels, as width."""
    strength: float | None = None
    """img2img only: how much to change the init image, in [0, 1] (None: 0.8 when there is an init image)."""
    karras: bool = False
    """Karras et al. 2022 sigma spacing (for samplers that walk interpolated sigmas)."""
    timestep_spacing: str | None = None
    """leading | linspace | trailing (None: the model's scheduler config)."""
    max_pixels: int = limits.MAX_PIXELS
    """Pixel budget per image (width x height), checked before allocating; raise it for large images."""

    def __post_init__(self) -> None:
        check_text(self.negative_prompt, "negative prompt")
        if self.steps is not None:
            _number(self.steps, "--steps", int)
            if not 1 <= self.steps <= limits.MAX_STEPS:
                raise UsageError(f"--steps must be in 1..{limits.MAX_STEPS}, got {self.steps}")
        if self.sampler is not None:
            from ldmkit.diffusion.registry import get_sampler  # no torch: the table only

            get_sampler(self.sampler)
        if self.guidance is not None:
            _number(self.guidance, "--guidance", float)
            if self.guidance < 0:
                raise UsageError(f"--guidance must be >= 0, got {self.guidance}")
        if self.guidance_rescale is not None:
            _number(self.guidance_rescale, "--guidance-rescale", float)
            if not 0.0 <= self.guidance_rescale <= 1.0:
                raise UsageError(f"--guidance-rescale must be in [0, 1], got {self.guidance_rescale}")
        _number(self.num_images, "--n", int)
        if not 1 <= self.num_images <= limits.MAX_IMAGES:
            raise UsageError(f"--n must be in 1..{limits.MAX_IMAGES}, got {self.num_images}")
        self._check_seed()
        self._check_size()
        if self.strength is not None:
            _number(self.strength, "--strength", float)
            if not 0.0 <= self.strength <= 1.0:
                raise UsageError(f"--strength must be in [0, 1], got {self.strength}")
        if not isinstance(self.karras, bool):
            raise UsageError(f"karras must be True or False, got {self.karras!r}")
        if self.karras and self.sampler is not None:
            from ldmkit.diffusion.registry import KARRAS_FAMILIES, get_sampler, karras_samplers

            if get_sampler(self.sampler).family not in KARRAS_FAMILIES:
                raise UsageError(f"--karras does not apply to sampler {self.sampler!r} (it steps along the training "
                                 f"timesteps); --karras works with: {', '.join(karras_samplers())}")
        if self.timestep_spacing is not None and self.timestep_spacing not in limits.TIMESTEP_SPACINGS:
            raise UsageError(f"--timestep-spacing must be one of {', '.join(limits.TIMESTEP_SPACINGS)}, "
                             f"got {self.timestep_spacing!r}")

    def _check_seed(self) -> None:
        _number(self.seed, "--seed", int)
        if self.seed == -1:
            return
        if not 0 <= self.seed <= limits.MAX_SEED:
            raise UsageError(f"--seed must be in 0..2^64-1 (or -1 for a random seed), got {self.seed}")
        if self.seed + self.num_images - 1 > limits.MAX_SEED:
            raise UsageError(f"--seed {self.seed} with --n {self.num_images}: image k uses seed + k, which would "
                             "pass 2^64-1; choose a smaller seed")

    def _check_size(self) -> None:
        _number(self.max_pixels, "--max-pixels", int)
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        for flag, value in (("width", self.width), ("height", self.height)):
            if value is not None:
                _number(value, f"--size {flag}", int)
                if value <= 0:
                    raise UsageError(f"--size: {flag} must be a positive number of pixels, got {value}")
        if self.width is not None and self.height is not None and self.width * self.height > self.max_pixels:
            raise UsageError(f"--size {self.width}x{self.height} is {self.width * self.height} pixels, over the "
                             f"budget of {self.max_pixels} per image; pass --max-pixels to allow more")

    def with_seed(self) -> SamplingSettings:
        """These settings with seed -1 replaced by a random seed that leaves room for num_images."""
        if self.seed != -1:
            return self
        return replace(self, seed=secrets.randbelow(limits.MAX_SEED - self.num_images + 2))

    def seeds(self) -> list[int]:
        """The seed of each image: seed, seed + 1, ... (call `with_seed` first when seed is -1)."""
        if self.seed == -1:
            raise UsageError("seed -1 (random) must be drawn with SamplingSettings.with_seed() before sampling")
        return [self.seed + k for k in range(self.num_images)]


__all__ = ["SamplingSettings", "check_text", "DEFAULT_SAMPLING", "DEFAULT_STRENGTH"]
