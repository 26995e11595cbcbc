"""The denoiser: "given x and sigma, the clean estimate" — the only thing samplers ever see.

The model predicts; the denoiser converts (k-diffusion's `DiscreteEpsDDPMDenoiser` idea). Input scaling,
the sigma -> timestep map and the epsilon / v / x0 conversions live here and nowhere else.
Guidance is a wrapper around a denoiser (`CFGDenoiser`), not a branch in a pipeline.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ldmkit.diffusion.schedules import PREDICTION_TYPES, NoiseSchedule, SigmaSteps, sigma_to_t
from ldmkit.errors import UsageError

# model(x_in, t, context) -> raw model output (eps, v or x0 depending on the prediction type)
ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TimestepMap:
    """sigma -> model timestep. Exact for the sigmas a schedule produced; log-interpolated elsewhere."""

    def __init__(self, schedule: NoiseSchedule, steps: SigmaSteps | None = None):
        self.log_sigmas = np.log(schedule.sigmas().double().numpy())
        self.known: dict[float, float] = {}
        if steps is not None:
            for s, t in zip(steps.sigmas.tolist(), steps.timesteps.tolist()):
                self.known.setdefault(s, t)

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma)
        t = self.known.get(s)
        if t is None:
            t = float(sigma_to_t(np.array([s]), self.log_sigmas)[0])
        return torch.tensor(t, dtype=torch.float32)


class Denoiser:
    """Wraps a noise-prediction network into x0 = D(x, sigma) on VE latents x = x0 + sigma * eps."""

    def __init__(self, model: ModelFn, prediction_type: str, timestep_map: TimestepMap,
                 x0_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`x0_transform` limits the clean estimate (a scheduler config's `clip_sample` / `thresholding`,
        see scheduler_fields.py) before any sampler sees it."""
        if prediction_type not in PREDICTION_TYPES:
            raise UsageError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        self.model = model
        self.prediction_type = prediction_type
        self.timestep_map = timestep_map
        self.x0_transform = x0_transform

    def model_output(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The raw network output at (x, sigma): the input is scaled to unit variance first."""
        c_in = (sigma**2 + 1) ** -0.5
        t = self.timestep_map(sigma)
        return self.model(x * c_in, t, context)

    def to_x0(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Convert a raw output to the clean estimate (Karras et al. 2022, Table 1 with sigma_data = 1)."""
        if self.prediction_type == "epsilon":
            x0 = x - sigma * out
        elif self.prediction_type == "v_prediction":
            # x0 = sqrt(a) x_vp - sqrt(1-a) v with a = 1/(1+sigma^2), x_vp = x sqrt(a)  (Salimans & Ho 2022 §4)
            x0 = x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        else:
            x0 = out
        return x0 if self.x0_transform is None else self.x0_transform(x0)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.to_x0(x, sigma, self.model_output(x, sigma, context))


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Match the guided prediction's std to the conditional one, blended by phi (Lin et al. 2023 §3.4, Alg. 2)."""
    dims = list(range(1, guided.ndim))
    factor = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)  # (B, 1, 1, 1): per image
    return guided * (phi * factor + (1 - phi))


class CFGDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022) around a Denoiser, with optional guidance rescale.

    Guidance is applied to the raw model output, as diffusers does; for eps/v/x0 outputs plain CFG is
    the same in any of them (the conversion is affine), but the rescale's std is not, so the space matters.
    `scale == 1` runs the conditional branch only.
    """

    def __init__(self, denoiser: Denoiser, cond: torch.Tensor, uncond: torch.Tensor, scale: float, rescale: float = 0.0):
        if not math.isfinite(scale) or scale < 0:  # nan < 0 is False: check finiteness first
            raise UsageError(f"guidance must be a finite number >= 0, got {scale}")
        if not 0.0 <= rescale <= 1.0:  # also false for nan
            raise UsageError(f"guidance_rescale must be in [0, 1], got {rescale}")
        self.denoiser, self.cond, self.uncond = denoiser, cond, uncond
        self.scale, self.rescale = scale, rescale
        self.both = torch.cat([uncond, cond])  # (2B, L, D): one batched model call per step for both branches

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return self.denoiser(x, sigma, self.cond)
        out = self.denoiser.model_output(torch.cat([x, x]), sigma, self.both)  # (2B, C, H, W)
        out_uncond, out_cond = out.chunk(2)  # (B, C, H, W) each: the batch order of self.both
        guided = out_uncond + self.scale * (out_cond - out_uncond)  # (B, C, H, W)
        if self.rescale > 0:
            guided = rescale_guidance(guided, out_cond, self.rescale)
        return self.denoiser.to_x0(x, sigma, guided)
