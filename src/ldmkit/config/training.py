"""`TrainConfig`: the settings of the shared training loop (`ldmkit.training.loop.train`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ldmkit.config.checks import check_bool, check_choice, check_float, check_int
from ldmkit.errors import UsageError

LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
MAX_MINUTES = 60.0 * 24 * 366  # a year: a budget is a bounded number


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run, shared by every component trainer (VAE, UNet, CLIP)."""

    steps: int = 1000
    """Total optimizer steps of the run (skipped non-finite steps included). Resuming continues to this."""
    batch_size: int = 16
    """Samples per micro-batch on EACH process. Effective batch = batch_size * processes * grad_accum."""
    grad_accum: int = 1
    """Micro-batches whose gradients are accumulated before one optimizer step."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (reached at the end of warm-up)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2), each in [0, 1)."""
    adam_eps: float = 1e-8
    """AdamW epsilon added to the denominator."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to `lr`."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: "constant" keeps `lr`; "cosine" decays it to `lr * min_lr_ratio` at `steps`."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine schedule as a fraction of `lr`, in [0, 1]."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this value; 0 turns clipping off."""
    ema_decay: float = 0.0
    """Decay of the exponential moving average of the weights, in [0, 1); 0 turns EMA off."""
    ema_warmup: bool = True
    """Ramp the EMA decay as min(ema_decay, (1 + s) / (10 + s)) so that random initial weights wash out of the
    average; false applies `ema_decay` from the first step (the average starts at the initial weights: meant
    for continuing from trained weights). The ramp reaches 0.999 only at step 8,991: a run that ends before
    its decay is reached says so when it starts (and when a time budget fits its step count)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision: "no", "bf16" or "fp16" (fp16 uses a gradient scaler)."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps; 0 = only at the end or on interrupt."""
    keep_last: int = 3
    """Complete checkpoints kept; older ones are deleted after a new one is complete."""
    seed: int = 0
    """Seed of the data order and every RNG (each process adds its rank)."""
    log_every: int = 10
    """Write a line to metrics.jsonl (and refresh the progress bar) every this many steps."""
    validate_every: int = 0
    """Call the task's `validate` every this many steps (EMA weights if on); 0 = never."""
    max_nonfinite_in_a_row: int = 10
    """Stop with diagnostics after this many consecutive steps with a non-finite loss or gradient."""
    deterministic: bool = False
    """Use torch deterministic algorithms (bitwise reproducible on CPU; slower on GPU)."""
    progress_bar: bool = True
    """Show a tqdm progress bar on stderr (main process only)."""
    max_minutes: float | None = None
    """Wall-time budget of the run in minutes (the loop's time, summed over resumes like metrics.jsonl's
    elapsed_s): the step count is fitted to it after the first steps are timed, capped by `steps`, and the
    learning-rate schedule ends at the fitted count (ldmkit.training.time_budget); None: no budget."""

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        for name in ("steps", "batch_size", "grad_accum", "keep_last", "log_every", "max_nonfinite_in_a_row"):
            check_int(owner, name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "checkpoint_every", "seed", "validate_every"):
            check_int(owner, name, getattr(self, name), minimum=0)
        check_float(owner, "lr", self.lr, positive=True)
        check_float(owner, "weight_decay", self.weight_decay, minimum=0.0)
        check_float(owner, "adam_eps", self.adam_eps, positive=True)
        check_float(owner, "min_lr_ratio", self.min_lr_ratio, minimum=0.0, maximum=1.0)
        if self.min_lr_ratio and self.lr_schedule != "cosine":
            raise UsageError(f"{owner}.min_lr_ratio ({self.min_lr_ratio}) has no effect with lr_schedule "
                             f"{self.lr_schedule!r}; it is the floor of the cosine schedule")
        check_float(owner, "grad_clip", self.grad_clip, minimum=0.0)
        check_float(owner, "ema_decay", self.ema_decay, minimum=0.0, below=1.0)
        check_bool(owner, "ema_warmup", self.ema_warmup)
        if not self.ema_warmup and not self.ema_enabled:
            raise UsageError(f"{owner}.ema_warmup false has no effect with ema_decay 0 (EMA off); set an ema_decay "
                             "or leave ema_warmup at true")
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise UsageError(f"{owner}.betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            check_float(owner, f"betas[{i}]", beta, minimum=0.0, below=1.0)
        check_choice(owner, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice(owner, "mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        check_bool(owner, "deterministic", self.deterministic)
        check_bool(owner, "progress_bar", self.progress_bar)
        if self.max_minutes is not None:
            check_float(owner, "max_minutes", self.max_minutes, positive=True, maximum=MAX_MINUTES)

    @property
    def ema_enabled(self) -> bool:
        """Whether an EMA copy of the weights is kept."""
        return self.ema_decay > 0.0

    def ema_shortfall(self, total_steps: int) -> str | None:
        """What to tell the user when the EMA warm-up does not reach `ema_decay` within `total_steps` (then every
        decay above the last step's ramp value trains the same); None when it does, or when EMA or warm-up is off."""
        if not self.ema_enabled or not self.ema_warmup:
            return None
        last = ema_warmup_decay(1.0, total_steps - 1)  # the decay of the last update
        if last >= self.ema_decay:
            return None
        reached = ema_warmup_reach(self.ema_decay) + 1  # as run steps count: the first optimizer step is 1
        return (f"train.ema_decay {self.ema_decay} is reached by the EMA warm-up only at step {reached:,}; this run "
                f"ends at step {total_steps:,}, where the warm-up gives {last:.5f}, so any ema_decay above that "
                f"averages the same. Set train.ema_warmup false to apply {self.ema_decay} from the first step "
                "(when continuing from trained weights), or accept the shorter average")


def ema_warmup_decay(decay: float, step: int) -> float:
    """min(decay, (1 + step) / (10 + step)): the decay of the EMA update after optimizer step `step` + 1.

    Without a warm-up a 0.999 EMA after 2,000 steps still holds 0.999**2000 = 13.5% of the random initial
    weights (seen in a shapes-32 run: noise-like, prompt-blind samples). Same rule as diffusers'
    EMAModel(use_ema_warmup=False) and timm's ModelEmaV2 warm-up. It reaches 0.999 only at step 8,991, so a
    continuation of trained weights can turn it off (`ema_warmup: false`).
    """
    return min(decay, (1 + step) / (10 + step))


def ema_warmup_reach(decay: float) -> int:
    """The first step (0-based, as `ema_warmup_decay` counts) whose warm-up value reaches `decay`."""
    step = max(0, math.ceil((10 * decay - 1) / (1 - decay)) - 1)
    while ema_warmup_decay(1.0, step) < decay:  # float rounding of the closed form
        step += 1
    while step > 0 and ema_warmup_decay(1.0, step - 1) >= decay:
        step -= 1
    return step


TRIM_POLICIES = ("crop", "pad", "fill")
MAX_VIEWS = 64
TRIM_FOCI = ("auto", "face", "saliency", "centre")


@dataclass(frozen=True)
class TrimSection:
    """How every image is brought to the square training size (`ldmkit.data.trim.standardize`); the same
    choices as `ldmkit data preview --no-trim --focus F --fit crop|pad`."""

    trim: bool = True
    """Cut uniform borders first (a subject on a plain backdrop is framed, not the backdrop)."""
    focus: Literal["auto", "face", "saliency", "centre"] = "auto"
    """Where a crop that cannot hold the whole subject goes; 'auto' tries face, then saliency, then centre."""
    fit: Literal["crop", "pad", "fill"] = "crop"
    """'crop' to the square (the whole subject when it fits), 'pad' the short side with the border colour (keeps
    everything), or 'fill' the square with the subject (its long side cut; the crop of trim version 1, which
    the shipped default model was trained on)."""

    def __post_init__(self) -> None:
        check_bool("data.trim", "trim", self.trim)
        check_choice("data.trim", "focus", self.focus, TRIM_FOCI)
        check_choice("data.trim", "fit", self.fit, TRIM_POLICIES)
        if self.fit == "pad" and self.focus != "auto":
            raise UsageError(f"data.trim.focus {self.focus!r} has no effect with data.trim.fit 'pad' (padding keeps "
                             "the whole image); leave focus at auto or use fit: crop")


@dataclass(frozen=True)
class AugmentSection:
    """Training-time augmentation of the VAE trainer (every step draws from the run's seeded generator)."""

    flip_p: float = 0.5
    """Probability of a horizontal mirror of each training image."""
    crop_scale: float = 1.0
    """Smallest side of a random resized crop, as a fraction of the image side (1.0: off). The crop keeps
    the trimming focal point (a face, the subject) inside its middle half."""
    jitter: float = 0.0
    """Colour jitter strength: brightness, contrast and saturation each scaled by a factor drawn from
    [1 - jitter, 1 + jitter] (0: off)."""

    def __post_init__(self) -> None:
        owner = "augment"
        check_float(owner, "flip_p", self.flip_p, minimum=0.0, maximum=1.0)
        check_float(owner, "crop_scale", self.crop_scale, positive=True, maximum=1.0)
        check_float(owner, "jitter", self.jitter, minimum=0.0, below=1.0)

    @property
    def enabled(self) -> bool:
        """Whether any augmentation changes an image."""
        return self.flip_p > 0 or self.crop_scale < 1.0 or self.jitter > 0


@dataclass(frozen=True)
class UNetAugmentSection(AugmentSection):
    """Augmentation of the UNet trainer. Latents are cached, so each image is encoded as `views` random
    views (crop + jitter), each also mirrored when flips are on; every step picks one view (and, with
    probability flip_p, its mirror) with the run's generator. A mirrored image trains with its caption's
    'left' and 'right' swapped; images labelled as holding text are never mirrored."""

    flip_p: float = 0.0
    """Probability of training on the mirrored image (and mirrored caption); off by default."""
    views: int = 1
    """Augmented views cached per image (encoded once; the cache grows by this factor, x2 with flips).
    Must be 1 when crop_scale and jitter are off, and > 1 when either is on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("augment", "views", self.views, minimum=1)
        if self.views > MAX_VIEWS:
            raise UsageError(f"augment.views must be <= {MAX_VIEWS} (the cache holds every view), got {self.views}")
        varies = self.crop_scale < 1.0 or self.jitter > 0
        if self.views > 1 and not varies:
            raise UsageError(f"augment.views {self.views} has no effect without augment.crop_scale < 1 or "
                             "augment.jitter > 0 (every view would be the same image)")
        if varies and self.views == 1:
            raise UsageError("augment.crop_scale / augment.jitter need augment.views >= 2 in the UNet trainer: "
                             "latents are cached, so one view would be one fixed crop for the whole run")
