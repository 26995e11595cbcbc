"""Which diffusers scheduler class a trained model folder ships, and whether that class can represent the schedule.

A model is trained on one noise schedule (beta schedule, zero terminal SNR, prediction type); its folder's
`scheduler/scheduler_config.json` must say so in a class that diffusers can load with those values, or the
folder would not sample the way it was trained. diffusers 0.42 knows `sigmoid` betas only in DDPMScheduler, and
`rescale_betas_zero_snr` not in PNDMScheduler or HeunDiscreteScheduler: CAPABILITIES says so (checked against
diffusers by tests/diffusion/test_scheduler_classes.py). Torch-free: the recipe check runs before anything loads.
"""

from __future__ import annotations

from typing import Any

from ldmkit.diffusion.beta_schedules import BETA_SCHEDULES
from ldmkit.diffusion.scheduler_fields import CLASS_DEFAULTS
from ldmkit.errors import UsageError

_NAMED = ("linear", "scaled_linear", "squaredcos_cap_v2")

# class -> (beta schedules it builds by name, has rescale_betas_zero_snr)
CAPABILITIES: dict[str, tuple[tuple[str, ...], bool]] = {
    "DDIMScheduler": (_NAMED, True),
    "DDPMScheduler": (BETA_SCHEDULES, True),
    "PNDMScheduler": (_NAMED, False),
    "EulerDiscreteScheduler": (_NAMED, True),
    "EulerAncestralDiscreteScheduler": (_NAMED, True),
    "HeunDiscreteScheduler": (_NAMED, False),
    "DPMSolverMultistepScheduler": (_NAMED, True),
    "UniPCMultistepScheduler": (_NAMED, True),
}
# tried in this order when the start model's class cannot represent the schedule and the recipe names none
FALLBACK_CLASSES = ("DDIMScheduler", "DDPMScheduler")


def cannot_represent(cls: str, beta_schedule: str, zero_terminal_snr: bool) -> str | None:
    """Why diffusers' `cls` cannot hold this schedule, or None when it can."""
    if cls not in CAPABILITIES:
        return f"ldmkit writes only {', '.join(CAPABILITIES)}"
    schedules, zero_snr = CAPABILITIES[cls]
    if beta_schedule not in schedules:
        return f"diffusers' {cls} builds beta_schedule {', '.join(schedules)}, not {beta_schedule!r}"
    if zero_terminal_snr and not zero_snr:
        return f"diffusers' {cls} has no rescale_betas_zero_snr"
    return None


def check_scheduler_choice(scheduler: str | None, beta_schedule: str | None, zero_terminal_snr: bool) -> None:
    """The recipe-time part of the check (unet.scheduler / unet.beta_schedule known without the start model)."""
    if scheduler is None:
        return
    if scheduler not in CAPABILITIES:
        raise UsageError(f"unet.scheduler {scheduler!r} is not one of {', '.join(CAPABILITIES)}")
    why = cannot_represent(scheduler, beta_schedule or "scaled_linear", zero_terminal_snr)
    if why and (beta_schedule is not None or zero_terminal_snr):
        raise UsageError(f"unet.scheduler {scheduler} cannot represent the schedule this recipe trains "
                         f"(beta_schedule={beta_schedule}, zero_terminal_snr={zero_terminal_snr}): {why}; "
                         f"pick another unet.scheduler or leave it unset to choose one that can")


def trained_scheduler_config(start: dict[str, Any], *, prediction_type: str, zero_terminal_snr: bool,
                             beta_schedule: str | None = None, beta_start: float | None = None,
                             beta_end: float | None = None, scheduler: str | None = None) -> dict[str, Any]:
    """The scheduler config a UNet trained by this recipe ships with, starting from the start model's config.

    Class: `scheduler` if given (refused if it cannot represent the schedule), else the start's class if it can,
    else the first of FALLBACK_CLASSES that can. Zero terminal SNR also selects trailing spacing (Lin et al.
    2023 §3.3: sampling starts from the last, pure-noise timestep). Raises UsageError before any training.
    """
    start_cls = start.get("_class_name", "")
    eff = {**CLASS_DEFAULTS.get(start_cls, CLASS_DEFAULTS["DDPMScheduler"]), **start}  # what start really used
    schedule = beta_schedule or eff["beta_schedule"]
    if beta_schedule is None and eff.get("trained_betas") is not None and (beta_start or beta_end):
        raise UsageError("unet.beta_start/beta_end have no effect on a start model with trained_betas; "
                         "set unet.beta_schedule too")
    if scheduler is not None:
        why = cannot_represent(scheduler, schedule, zero_terminal_snr)
        if why:
            raise UsageError(f"unet.scheduler {scheduler} cannot represent beta_schedule={schedule!r}, "
                             f"zero_terminal_snr={zero_terminal_snr}: {why}")
        cls = scheduler
    else:
        cls = next(c for c in (start_cls, *FALLBACK_CLASSES) if not cannot_represent(c, schedule, zero_terminal_snr))
    keys = CLASS_DEFAULTS[cls]
    # a new class takes only the start's keys it reads (diffusers would warn about the others and ignore them)
    config = dict(start) if cls == start_cls else {k: v for k, v in start.items() if k in keys or k.startswith("_")}
    config.update(_class_name=cls, prediction_type=prediction_type, beta_schedule=schedule,
                  beta_start=beta_start if beta_start is not None else eff["beta_start"],
                  beta_end=beta_end if beta_end is not None else eff["beta_end"],
                  num_train_timesteps=eff["num_train_timesteps"])
    if beta_schedule is not None:
        config["trained_betas"] = None  # explicit betas would override the schedule the recipe asks for
    if "clip_sample" in keys and "clip_sample" not in start:
        config["clip_sample"] = False  # latents are not confined to [-1, 1] (DDIM/DDPM default to clipping)
    if "rescale_betas_zero_snr" in keys:
        config["rescale_betas_zero_snr"] = zero_terminal_snr
    if zero_terminal_snr:
        config["timestep_spacing"] = "trailing"
        if "set_alpha_to_one" in keys:
            config["set_alpha_to_one"] = False
    return config
