"""Noise schedules and the sigma sequences samplers walk along.

Notation (k-diffusion / Karras et al. 2022): a training timestep t in [0, T) has a cumulative
signal rate alpha_bar_t; the *variance-exploding* noise level is sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t).
Samplers work on x = x0 + sigma * eps (VE); the UNet sees x * c_in = x / sqrt(sigma^2 + 1), which is
exactly the variance-preserving latent diffusers' DDIM/PNDM/DDPM schedulers carry around.

The sequences built here reproduce diffusers' `set_timesteps` for each scheduler family, so
that our samplers and diffusers' schedulers agree step by step (tests/diffusion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ldmkit.diffusion.beta_schedules import BETA_SCHEDULES
from ldmkit.errors import UsageError
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# alpha_bar at the last step after the zero-terminal-SNR rescale is exactly 0 (sigma = inf);
# like diffusers' Euler schedulers we store the smallest fp16 subnormal instead.
ZERO_SNR_ALPHA_BAR = 2.0**-24


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped at max_beta."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has zero SNR (Lin et al. 2023, Algorithm 1)."""
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class NoiseSchedule:
    """The discrete training schedule a model was trained with (travels in scheduler_config.json)."""

    num_train_timesteps: int = 1000
    """T, the number of discrete training timesteps."""
    beta_schedule: str = "scaled_linear"
    """One of BETA_SCHEDULES."""
    beta_start: float = 0.00085
    """First beta (ignored by the cosine schedule)."""
    beta_end: float = 0.012
    """Last beta (ignored by the cosine schedule)."""
    rescale_zero_terminal_snr: bool = False
    """Rescale betas so the final timestep is pure noise (Lin et al. 2023 §3.1)."""
    trained_betas: tuple[float, ...] | None = None
    """Explicit betas, one per training timestep (diffusers' `trained_betas`); they replace `beta_schedule`."""

    def __post_init__(self):
        if self.trained_betas is not None:
            if not isinstance(self.trained_betas, (list, tuple)) or not all(
                    isinstance(b, (int, float)) and not isinstance(b, bool) for b in self.trained_betas):
                raise UsageError("trained_betas must be a list of numbers (one beta per training timestep)")
            betas = tuple(float(b) for b in self.trained_betas)
            if len(betas) != self.num_train_timesteps or not all(0 < b <= 1 for b in betas):
                raise UsageError(f"trained_betas must hold num_train_timesteps={self.num_train_timesteps} values in "
                                 f"(0, 1], got {len(betas)}")
            object.__setattr__(self, "trained_betas", betas)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise UsageError(f"beta_schedule {self.beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}")
        if not 2 <= self.num_train_timesteps <= 100_000:
            raise UsageError(f"num_train_timesteps must be in 2..100000, got {self.num_train_timesteps}")
        if not 0 < self.beta_start < 1 or not 0 < self.beta_end < 1:
            raise UsageError(f"beta_start/beta_end must be in (0, 1), got {self.beta_start}, {self.beta_end}")

    @classmethod
    def from_scheduler_config(cls, config: dict) -> NoiseSchedule:
        """Read the fields we need from a diffusers scheduler config; other keys are ignored."""
        return cls(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_schedule=config.get("beta_schedule", "linear"),
            beta_start=float(config.get("beta_start", 0.0001)),
            beta_end=float(config.get("beta_end", 0.02)),
            rescale_zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
            trained_betas=config.get("trained_betas"),
        )

    def betas(self) -> torch.Tensor:
        T = self.num_train_timesteps
        # float32 arithmetic on purpose: identical tables to diffusers', bit for bit.
        if self.trained_betas is not None:
            betas = torch.tensor(self.trained_betas, dtype=torch.float32)
        elif self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=torch.float32) ** 2
        elif self.beta_schedule == "squaredcos_cap_v2":
            betas = cosine_betas(T)
        else:  # sigmoid (Jabri et al. 2022 via diffusers' DDPM)
            betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (self.beta_end - self.beta_start) + self.beta_start
        if self.rescale_zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return betas

    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t for t = 0..T-1 (float32)."""
        alpha_bar = torch.cumprod(1.0 - self.betas(), dim=0)
        if self.rescale_zero_terminal_snr:
            alpha_bar[-1] = ZERO_SNR_ALPHA_BAR
        return alpha_bar

    def sigmas(self) -> torch.Tensor:
        """sigma_t for t = 0..T-1 (float32, increasing)."""
        alpha_bar = self.alphas_cumprod()
        return ((1 - alpha_bar) / alpha_bar) ** 0.5


@dataclass(frozen=True)
class SigmaSteps:
    """What a sampler walks along: N+1 noise levels and the N model timesteps that go with them."""

    sigmas: torch.Tensor
    """Decreasing noise levels, float32, shape [N+1]; the last is where sampling ends (often 0)."""
    timesteps: torch.Tensor
    """The model timestep fed to the UNet at each of the first N sigmas, float32, shape [N]."""

    def __len__(self) -> int:
        return len(self.timesteps)

    def tail(self, start: int) -> SigmaSteps:
        """The last steps from index `start` on (img2img starts part-way down)."""
        return SigmaSteps(self.sigmas[start:], self.timesteps[start:])


def spaced_timesteps(steps: int, T: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """Integer (or, for linspace, fractional) timesteps, decreasing: Lin et al. 2023, Table 2."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.float64) + steps_offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / steps)) - 1.0
    raise UsageError(f"timestep spacing {spacing!r} is not one of {', '.join(SPACINGS)}")


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = np.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timestep of each sigma, by linear interpolation in log sigma over the training table."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    low = np.clip(np.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0, len(log_sigmas) - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return low + w


def _steps(sigmas, timesteps) -> SigmaSteps:
    return SigmaSteps(
        torch.as_tensor(np.asarray(sigmas, dtype=np.float32)),
        torch.as_tensor(np.asarray(timesteps, dtype=np.float32)),
    )


def discrete_steps(
    schedule: NoiseSchedule, steps: int, *, spacing: str = "leading", steps_offset: int = 0, final_alpha_one: bool = False
) -> SigmaSteps:
    """DDPM / DDIM / PNDM family: integer timesteps, sigma read straight off the training table.

    The last level is sigma(t_last - T//N) if that is a valid timestep, else 0 when final_alpha_one
    (diffusers' `set_alpha_to_one=True`) or sigma(0) when not — as DDIMScheduler.step does.
    """
    T = schedule.num_train_timesteps
    table = schedule.sigmas().double().numpy()
    ts = spaced_timesteps(steps, T, spacing, steps_offset).round().astype(np.int64)
    if ts.min() < 0 or ts.max() >= T:
        raise UsageError(f"{steps} steps with {spacing!r} spacing and offset {steps_offset} leave timesteps outside 0..{T - 1}")
    prev = ts[-1] - T // steps
    final = table[prev] if prev >= 0 else (0.0 if final_alpha_one else table[0])
    return _steps(np.append(table[ts], final), ts)


def ddpm_steps(schedule: NoiseSchedule, steps: int, *, spacing: str = "leading", steps_offset: int = 0) -> SigmaSteps:
    """DDPM: like the discrete family, but the chain always ends at alpha_bar = 1 (sigma 0)."""
    T = schedule.num_train_timesteps
    table = schedule.sigmas().double().numpy()
    ts = spaced_timesteps(steps, T, spacing, steps_offset).round().astype(np.int64)
    return _steps(np.append(table[ts], 0.0), ts)


def interpolated_steps(
    schedule: NoiseSchedule, steps: int, *, spacing: str = "linspace", steps_offset: int = 0, karras: bool = False
) -> SigmaSteps:
    """Euler / Euler-ancestral / Heun family: sigma interpolated linearly at (fractional) timesteps, then 0."""
    T = schedule.num_train_timesteps
    table = schedule.sigmas().double().numpy()
    ts = spaced_timesteps(steps, T, spacing, steps_offset)
    sig = np.interp(ts, np.arange(T), table)
    if karras:
        sig = karras_sigmas(sig[-1], sig[0], steps)
        ts = sigma_to_t(sig, np.log(table))
    return _steps(np.append(sig, 0.0), ts)


def multistep_steps(
    schedule: NoiseSchedule, steps: int, *, spacing: str = "linspace", steps_offset: int = 0, karras: bool = False
) -> SigmaSteps:
    """DPM-Solver / UniPC family: N of N+1 evenly spaced integer timesteps, then sigma 0."""
    T = schedule.num_train_timesteps
    table = schedule.sigmas().double().numpy()
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].copy()
    elif spacing == "leading":
        ts = (np.arange(0, steps + 1) * (T // (steps + 1))).round()[::-1][:-1] + steps_offset
    else:
        ts = spaced_timesteps(steps, T, spacing, steps_offset)
    if karras:
        sig = karras_sigmas(table[0], table[-1], steps)
        ts = sigma_to_t(sig, np.log(table))
        if schedule.beta_schedule != "squaredcos_cap_v2":
            ts = ts.round()  # diffusers feeds the UNet integer timesteps here
    else:
        sig = np.interp(ts, np.arange(T), table)
    return _steps(np.append(sig, 0.0), ts)
