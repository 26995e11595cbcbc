"""What `ldmkit eval` is asked to do: the validated, bounded settings of one evaluation.

    settings = EvalSettings(model=Path("model"), data=Path("data/shapes"), out=Path("eval"),
                            n=64, seeds=(0,), sweep=parse_sweep("guidance=1,3,7.5"))

Every check runs here, before any model or dataset is loaded (ldmkit.evaluation.run.evaluate runs it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ldmkit.errors import UsageError
from ldmkit.evaluation.framing import check_fit
from ldmkit.pipeline.settings import SamplingSettings

SWEEPABLE = {"guidance": float, "steps": int, "sampler": str, "guidance_rescale": float}


@dataclass(frozen=True)
class Sweep:
    """One generation setting and the values it takes, one condition per value."""

    name: str
    """"guidance", "steps", "sampler" or "guidance_rescale"."""
    values: tuple
    """The values, in the order they are reported (converted to the setting's type)."""

    def __post_init__(self) -> None:
        if self.name not in SWEEPABLE:
            raise UsageError(f"--sweep {self.name}=...: can sweep only {', '.join(SWEEPABLE)}")
        if not self.values or len(set(self.values)) != len(self.values):
            raise UsageError(f"--sweep {self.name}: needs distinct values, got {list(self.values)}")
        object.__setattr__(self, "values", tuple(SWEEPABLE[self.name](v) for v in self.values))


def parse_sweep(text: str) -> Sweep:
    """"guidance=1,3,5" -> Sweep("guidance", (1.0, 3.0, 5.0)); clear errors for anything else."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise UsageError(f"--sweep {text!r}: expected NAME=V1,V2,... with NAME one of {', '.join(SWEEPABLE)}")
    if name not in SWEEPABLE:
        raise UsageError(f"--sweep {text!r}: can sweep only {', '.join(SWEEPABLE)}, not {name!r}")
    try:
        return Sweep(name, tuple(SWEEPABLE[name](v.strip()) for v in values.split(",")))
    except ValueError as err:
        raise UsageError(f"--sweep {text!r}: {err}") from None


@dataclass(frozen=True)
class EvalSettings:
    """What `evaluate` generates and measures."""

    model: Path
    """Model folder (diffusers layout); its clip/ is the scoring dual encoder unless `clip` is given."""
    data: Path
    """Dataset folder whose `split` holds the held-out captions and real images."""
    out: Path
    """Output folder for metrics.json, report.html and the images; must be new or empty."""
    split: str = "test"
    """Which split's captions and images to use (train, val, test)."""
    n: int = 32
    """How many of the split's images (first by image id) give captions; each gets one image per seed."""
    sample_seed: int | None = None
    """None: the first n images of the split; an integer: n images drawn at random with this seed (e.g. emoji
    from every group, not the start of the alphabet), in split order."""
    seeds: tuple[int, ...] = (0,)
    """Generation seeds; with best_of K the candidates of seed s are seeds s*K .. s*K+K-1."""
    seed_per_image: bool = False
    """False: every caption's image of seed s starts from seed s (one noise draw shared by all captions: paired
    comparisons of models see the same noise, but FD / KID / CMMD measure that one draw); True: caption i's image of
    seed s uses seed s*n + i, independent noise per image, as FD-style metrics assume."""
    sweep: Sweep | None = None
    """A setting to vary; None evaluates the settings below once."""
    clip: Path | None = None
    """Dual encoder folder (a model folder with clip/, clip/ itself, a `train clip` run or a transformers CLIPModel
    folder); asking for one makes it required."""
    steps: int | None = None
    """Sampling steps (None: the model's default)."""
    sampler: str | None = None
    """Sampler name (None: the model's default)."""
    guidance: float | None = None
    """Guidance scale (None: the model's default)."""
    guidance_rescale: float | None = None
    """Guidance rescale phi in [0, 1] (None: the model's default)."""
    karras: bool = False
    """Karras et al. 2022 sigma spacing, for the samplers that allow it (`ldmkit generate --karras`)."""
    best_of: int = 1
    """K > 1 also generates every condition with best-of-K reranking, to measure what it buys."""
    n_boot: int = 1000
    """Bootstrap replicates per interval."""
    boot_seed: int = 0
    """Seed of the bootstrap resampling."""
    where: dict[str, str] = field(default_factory=dict)
    """Evaluate only rows whose labels match all of these (e.g. {"source": "avatars"}), real images included."""
    attributes: Path | None = None
    """Attribute classifier folder (holding attributes/, or attributes/ itself); default MODEL/attributes/."""
    batch: int = 16
    """Images sampled together (one UNet batch per step); a batch changes images only by float rounding."""
    prompt_set: str = "captions"
    """"captions": each image's first caption; "free-avatars" / "free-avatars-templates": free phrasings of the
    split's avatars rows / their training-style controls; "free-avatars-new-words" (+ "-templates"): the same for
    colour words no caption option teaches (ldmkit.evaluation.free_prompts)."""
    fit: str | None = None
    """How the real images are framed to the model's size: None frames them as the model was trained (its recorded
    data.trim; ldmkit.evaluation.framing); 'crop', 'pad', 'fill' or 'stretch' (a plain resize) override it."""

    def __post_init__(self) -> None:
        for name in ("model", "data", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if not isinstance(self.n, int) or self.n < 2:
            raise UsageError(f"--n must be an integer >= 2 (metrics need two images), got {self.n!r}")
        seed = self.sample_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
            raise UsageError(f"--sample-seed must be an integer in [0, 2^32), got {self.sample_seed!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise UsageError(f"--seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if not isinstance(self.seed_per_image, bool):
            raise UsageError(f"seed_per_image must be true or false, got {self.seed_per_image!r}")
        if not isinstance(self.best_of, int) or self.best_of < 1:
            raise UsageError(f"--best-of must be an integer >= 1, got {self.best_of!r}")
        if self.seed_per_image and (max(self.seeds) + 1) * self.n * self.best_of > 2**64:
            raise UsageError(f"--seed-per-image: seed {max(self.seeds)} x --n {self.n} (x --best-of {self.best_of}) "
                             "passes the largest seed, 2^64-1")
        base = self.sampling()  # the one sampling check, before any model loads
        for value in self.sweep.values if self.sweep else ():
            replace(base, **{self.sweep.name: value})
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise UsageError(f"--batch must be an integer >= 1, got {self.batch!r}")
        if self.n_boot < 2:
            raise UsageError(f"n_boot must be >= 2, got {self.n_boot}")
        if self.clip is not None:
            object.__setattr__(self, "clip", Path(self.clip))
        if self.attributes is not None:
            object.__setattr__(self, "attributes", Path(self.attributes))
        if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in self.where.items()):
            raise UsageError(f"--where must be COLUMN=VALUE pairs, got {self.where!r}")
        from ldmkit.evaluation.free_prompts import PROMPT_SETS

        if self.prompt_set not in PROMPT_SETS:
            raise UsageError(f"--prompt-set must be one of {', '.join(PROMPT_SETS)}, got {self.prompt_set!r}")
        if self.fit is not None:
            check_fit(self.fit)

    def sampling(self) -> SamplingSettings:
        """The sampling request these settings make (before any sweep value is applied)."""
        return SamplingSettings(**sampling_fields(self))


def sampling_fields(settings: EvalSettings) -> dict:
    """The sampling settings an evaluation asks for, by SamplingSettings field (None / False: the model's default)."""
    return {"steps": settings.steps, "sampler": settings.sampler, "guidance": settings.guidance,
            "guidance_rescale": settings.guidance_rescale, "karras": settings.karras}


def settings_dict(settings: EvalSettings) -> dict:
    raw = asdict(settings)
    raw["sweep"] = {"name": settings.sweep.name, "values": list(settings.sweep.values)} if settings.sweep else None
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in raw.items()}


__all__ = ["EvalSettings", "Sweep", "parse_sweep", "sampling_fields", "settings_dict", "SWEEPABLE"]
