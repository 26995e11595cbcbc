"""What a model folder's scheduler config means for the sampler a user picked: every field honoured or refused.

diffusers' rule, which users rely on when they swap schedulers (`DDIMScheduler.from_config(pipe.scheduler.config)`):
the chosen scheduler class takes the folder config's keys that it accepts and its own defaults for the rest.
So an SD 1.x folder (a PNDM config) sampled with DDIM gets DDIM's `clip_sample=True` unless the folder says
otherwise. `read_scheduler_fields` applies the same rule for the diffusers class each ldmkit sampler reproduces
(registry.py), then either maps each field that changes sampling onto ldmkit's pieces (schedule, sigma steps,
an x0 transform in the denoiser, sampler options) or refuses it with a UsageError naming the field.

CLASS_DEFAULTS is diffusers 0.42's `__init__` defaults, checked against the installed diffusers by
tests/diffusion/test_scheduler_fields.py. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ldmkit.errors import UsageError

log = logging.getLogger(__name__)
_WARNED: set[str] = set()

_COMMON = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
           "trained_betas": None, "prediction_type": "epsilon", "steps_offset": 0}
_X0_LIMITS = {"clip_sample": True, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
              "clip_sample_range": 1.0, "sample_max_value": 1.0}
_SIGMA_KINDS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}

CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "DDIMScheduler": {**_COMMON, **_X0_LIMITS, "set_alpha_to_one": True, "timestep_spacing": "leading",
                      "rescale_betas_zero_snr": False},
    "DDPMScheduler": {**_COMMON, **_X0_LIMITS, "variance_type": "fixed_small", "timestep_spacing": "leading",
                      "rescale_betas_zero_snr": False},
    "PNDMScheduler": {**_COMMON, "skip_prk_steps": False, "set_alpha_to_one": False, "timestep_spacing": "leading"},
    "EulerDiscreteScheduler": {**_COMMON, **_SIGMA_KINDS, "interpolation_type": "linear", "sigma_min": None,
                               "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
                               "rescale_betas_zero_snr": False, "final_sigmas_type": "zero"},
    "EulerAncestralDiscreteScheduler": {**_COMMON, "timestep_spacing": "linspace", "rescale_betas_zero_snr": False},
    "HeunDiscreteScheduler": {**_COMMON, **_SIGMA_KINDS, "beta_start": 0.00085, "beta_end": 0.012,
                              "clip_sample": False, "clip_sample_range": 1.0, "timestep_spacing": "linspace"},
    "DPMSolverMultistepScheduler": {
        **_COMMON, **_SIGMA_KINDS, "solver_order": 2, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
        "euler_at_final": False, "use_lu_lambdas": False, "use_flow_sigmas": False, "flow_shift": 1.0,
        "final_sigmas_type": "zero", "lambda_min_clipped": -math.inf, "variance_type": None,
        "timestep_spacing": "linspace", "rescale_betas_zero_snr": False, "use_dynamic_shifting": False,
        "time_shift_type": "exponential"},
    "UniPCMultistepScheduler": {
        **_COMMON, **_SIGMA_KINDS, "solver_order": 2, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0, "predict_x0": True, "solver_type": "bh2", "lower_order_final": True,
        "disable_corrector": [], "solver_p": None, "use_flow_sigmas": False, "flow_shift": 1.0,
        "timestep_spacing": "linspace", "final_sigmas_type": "zero", "rescale_betas_zero_snr": False,
        "use_dynamic_shifting": False, "time_shift_type": "exponential", "sigma_min": None, "sigma_max": None,
        "shift_terminal": None},
}

# Values that define an ldmkit sampler where its diffusers class's default differs (the folder may still override).
SAMPLER_DEFINES: dict[str, dict[str, Any]] = {"pndm": {"skip_prk_steps": True}}

# field -> the only value(s) ldmkit's samplers implement; any other value is refused, naming the field.
ONLY = {
    "variance_type": (None, "fixed_small"), "skip_prk_steps": (True,), "interpolation_type": ("linear",),
    "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,), "use_dynamic_shifting": (False,), "sigma_min": (None,), "sigma_max": (None,),
    "timestep_type": ("discrete",), "final_sigmas_type": ("zero",), "algorithm_type": ("dpmsolver++",),
    "lambda_min_clipped": (-math.inf,), "predict_x0": (True,), "solver_p": (None,), "shift_terminal": (None,),
}
# The DPM-Solver++ sampler is 2M with the midpoint form; UniPC's order / variant are sampler options.
ONLY_FOR = {"DPMSolverMultistepScheduler": {"solver_order": (2,), "solver_type": ("midpoint",)},
            "UniPCMultistepScheduler": {"solver_order": (1, 2, 3), "solver_type": ("bh1", "bh2")}}

if TYPE_CHECKING:
    import torch

X0Transform = Callable[["torch.Tensor"], "torch.Tensor"]


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022 §2.3): per image, s = the `ratio` quantile of |x0|
    clamped to [1, max_value]; x0 is clipped to [-s, s] and divided by s."""
    import torch

    flat = x0.float().reshape(x0.shape[0], -1)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(x0.shape).to(x0.dtype)


@dataclass(frozen=True)
class SchedulerFields:
    """The sampling-relevant fields of a scheduler config, as the chosen sampler's diffusers class reads them."""

    config: dict[str, Any]
    """The effective config: class defaults, then the sampler's defining values, then the folder's keys."""
    spacing: str
    """Timestep spacing (leading / trailing / linspace); a user's choice replaces the folder's."""
    steps_offset: int
    """Offset added to leading-spaced timesteps."""
    final_alpha_one: bool
    """DDIM/PNDM `set_alpha_to_one`: the last step ends at sigma 0 rather than at sigma(0)."""
    karras: bool
    """Karras sigma spacing (the user's --karras, or the folder's `use_karras_sigmas`)."""
    x0_limit: X0Transform | None
    """Clipping or dynamic thresholding of the clean estimate (`clip_sample`, `thresholding`), or None."""
    sampler_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the sampler function (UniPC's order and variant; DDIM's x0 limit)."""

    @property
    def denoiser_x0_transform(self) -> X0Transform | None:
        """The x0 transform the denoiser applies (None when the sampler applies it itself: DDIM)."""
        return None if "x0_transform" in self.sampler_options else self.x0_limit

    def schedule(self):
        from ldmkit.diffusion.schedules import NoiseSchedule

        return NoiseSchedule.from_scheduler_config(self.config)

    @property
    def prediction_type(self) -> str:
        return self.config["prediction_type"]


def effective_config(config: dict[str, Any], spec) -> dict[str, Any]:
    """diffusers' from_config rule for spec's class: its defaults, overridden by the keys of `config` it accepts."""
    defaults = CLASS_DEFAULTS[spec.diffusers_class]
    return {**defaults, **SAMPLER_DEFINES.get(spec.name, {}),
            **{k: v for k, v in config.items() if k in defaults}}


def _refuse(spec, key: str, value: Any, why: str) -> UsageError:
    return UsageError(f"scheduler config field {key}={value!r} is not supported by the {spec.name!r} sampler ({why})")


def read_scheduler_fields(config: dict[str, Any], spec, *, spacing: str | None = None,
                          karras: bool | None = None) -> SchedulerFields:
    """Map a folder's scheduler config onto what ldmkit's `spec` sampler does, or refuse a field it cannot honour.

    `spacing` / `karras` are the user's choices (None: the folder's, else the class default).
    """
    from ldmkit.diffusion.schedules import PREDICTION_TYPES, SPACINGS

    eff = effective_config(config, spec)
    allowed = {**ONLY, **ONLY_FOR.get(spec.diffusers_class, {})}
    for key, ok in allowed.items():
        if key in eff and eff[key] not in ok:
            raise _refuse(spec, key, eff[key], "ldmkit implements " + " or ".join(repr(v) for v in ok))
    if eff["prediction_type"] not in PREDICTION_TYPES:
        raise _refuse(spec, "prediction_type", eff["prediction_type"], "one of " + ", ".join(PREDICTION_TYPES))
    spacing = eff["timestep_spacing"] if spacing is None else spacing
    if spacing not in SPACINGS:
        raise UsageError(f"timestep spacing {spacing!r} is not one of {', '.join(SPACINGS)}")
    offset = eff["steps_offset"]
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < eff["num_train_timesteps"]:
        raise UsageError(f"scheduler config field steps_offset must be an integer in 0..num_train_timesteps-1, "
                         f"got {offset!r}")
    use_karras = bool(eff.get("use_karras_sigmas", False)) if karras is None else bool(karras)
    options: dict[str, Any] = {}
    if spec.diffusers_class == "UniPCMultistepScheduler":
        corrector = eff["disable_corrector"] or []
        if not isinstance(corrector, (list, tuple)) or not all(isinstance(i, int) for i in corrector):
            raise _refuse(spec, "disable_corrector", corrector, "a list of step indices")
        options = {"order": eff["solver_order"], "solver_type": eff["solver_type"],
                   "lower_order_final": bool(eff["lower_order_final"]), "disable_corrector": tuple(corrector)}
    limit = x0_limit(eff)
    if limit is not None and not {"clip_sample", "thresholding"} & set(config) and spec.name not in _WARNED:
        _WARNED.add(spec.name)  # once per sampler and process: the pipeline reads the fields several times
        log.warning("the model's scheduler config does not set clip_sample, so %s's default (true) clips the clean "
                    "estimate to [-%s, %s] as diffusers does; latent models usually want clip_sample: false",
                    spec.diffusers_class, eff["clip_sample_range"], eff["clip_sample_range"])
    if limit is not None and spec.diffusers_class == "DDIMScheduler":
        options["x0_transform"] = limit  # DDIM keeps the model's own noise estimate: see samplers.sample_ddim
    return SchedulerFields(eff, spacing, offset, bool(eff.get("set_alpha_to_one", False)), use_karras, limit, options)


def x0_limit(eff: dict[str, Any]) -> X0Transform | None:
    """The clean-estimate transform of `thresholding` (first, as diffusers checks it) or `clip_sample`."""
    if eff.get("thresholding"):
        ratio, max_value = eff["dynamic_thresholding_ratio"], eff["sample_max_value"]
        if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
            raise UsageError(f"scheduler config field dynamic_thresholding_ratio must be in (0, 1], got {ratio!r}")
        if not (isinstance(max_value, (int, float)) and max_value >= 1):
            raise UsageError(f"scheduler config field sample_max_value must be >= 1, got {max_value!r}")
        return lambda x0: dynamic_threshold(x0, float(ratio), float(max_value))
    if eff.get("clip_sample"):
        r = eff["clip_sample_range"]
        if not (isinstance(r, (int, float)) and r > 0 and math.isfinite(r)):
            raise UsageError(f"scheduler config field clip_sample_range must be a positive number, got {r!r}")
        return lambda x0: x0.clamp(-float(r), float(r))
    return None
