"""Samplers: small pure functions with one signature (k-diffusion's `sampling.py` is the model).

    sample_NAME(denoise, x, sigmas, *, generator=None, callback=None) -> x

`denoise(x, sigma)` returns the clean estimate x0 for VE latents x = x0 + sigma * eps; `x` starts at
noise level sigmas[0] and each sampler returns the latents at sigmas[-1]. `generator` is a
torch.Generator or a list with one per batch item (so image k of a batch equals a single run with its
own generator). `callback(Step)` sees every step, which is how trajectories are recorded.
Each function reproduces one diffusers scheduler given the matching `SigmaSteps` (see registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generator = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class Step:
    """What a callback sees after each step."""

    index: int
    """Step number, 0-based."""
    sigma: float
    """Noise level the step started from."""
    sigma_next: float
    """Noise level the step went to."""
    x: torch.Tensor
    """Latents at `sigma` (before the step), VE scaling."""
    denoised: torch.Tensor
    """The model's clean estimate x0 at `sigma`."""


def gaussian_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn as diffusers' randn_tensor draws it."""
    if isinstance(generator, (list, tuple)):
        # one (1, C, h, w) draw per image, concatenated to (B, C, h, w): image k is independent of the batch
        return torch.cat([torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype) for g in generator]).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)  # (B, C, h, w)


def _report(callback, i, sigmas, x, denoised):
    if callback is not None:
        callback(Step(i, float(sigmas[i]), float(sigmas[i + 1]), x, denoised))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022, eq. 4): the noise estimate."""
    return (x - denoised) / sigma


@torch.no_grad()
def sample_euler(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 with no churn)."""
    for i in range(len(sigmas) - 1):  # sigmas: (steps + 1,), decreasing; sigmas[i] a 0-d tensor
        denoised = denoise(x, sigmas[i])  # (B, C, h, w), like x: latents, not pixels
        _report(callback, i, sigmas, x, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])  # (B, C, h, w)
    return x


def ancestral_split(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """Split a step into a deterministic move to sigma_down and fresh noise of std sigma_up."""
    sigma_up = torch.clamp(eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5, max=sigma_to)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


@torch.no_grad()
def sample_euler_ancestral(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """Ancestral Euler: an Euler step to sigma_down, then noise back up to sigma_next (k-diffusion)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, sigmas, x, denoised)
        sigma_down, sigma_up = ancestral_split(sigmas[i], sigmas[i + 1])
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        # diffusers draws noise on every step, the last included; keep its random stream
        x = x + gaussian_like(x, generator) * sigma_up
    return x


@torch.no_grad()
def sample_heun(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1); Euler on the last step to sigma 0."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, sigmas, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_euler = x + d * dt
        d_next = to_d(x_euler, sigmas[i + 1], denoise(x_euler, sigmas[i + 1]))
        x = x + (d + d_next) / 2 * dt
    return x


def _alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + sigma**2)


@torch.no_grad()
def sample_ddim(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None, eta: float = 0.0,
                x0_transform=None):
    """DDIM (Song et al. 2021, eq. 12): eta = 0 deterministic, eta = 1 the DDPM posterior's variance.

    `x0_transform` (clip_sample / thresholding) limits only the x0 term: the direction term keeps the model's
    own noise estimate, as diffusers' DDIMScheduler.step does by default (use_clipped_model_output=False).
    """
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])  # (B, C, h, w)
        eps = to_d(x, sigmas[i], denoised)  # (B, C, h, w)
        if x0_transform is not None:
            denoised = x0_transform(denoised)
        _report(callback, i, sigmas, x, denoised)
        a, a_prev = _alpha_bar(sigmas[i]), _alpha_bar(sigmas[i + 1])  # 0-d tensors: broadcast over the batch
        std = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5  # eq. 16, sigma_t(eta)
        # in VP terms x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps + std z; divide by sqrt(a_prev)
        x = denoised + ((1 - a_prev - std**2) / a_prev).clamp(min=0) ** 0.5 * eps
        if eta > 0:
            x = x + gaussian_like(x, generator) * std / a_prev**0.5
    return x


@torch.no_grad()
def sample_ddpm(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """Ancestral sampling from the DDPM posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, eqs. 6-7)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, sigmas, x, denoised)
        a, a_prev = _alpha_bar(sigmas[i]), _alpha_bar(sigmas[i + 1])
        beta_t = 1 - a / a_prev
        x_vp = x * a**0.5
        mean = (a_prev**0.5 * beta_t * denoised + (a / a_prev) ** 0.5 * (1 - a_prev) * x_vp) / (1 - a)
        if sigmas[i + 1] > 0:  # "fixed_small" variance beta~_t; no noise into the final sample
            var = ((1 - a_prev) / (1 - a) * beta_t).clamp(min=1e-20)
            mean = mean + var**0.5 * gaussian_like(x, generator)
        x = mean / a_prev**0.5
    return x


@torch.no_grad()
def sample_plms(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """Pseudo linear multistep (Liu et al. 2022, PNDM eq. 12): Adams-Bashforth on eps with DDIM transfer.

    The first step is second order with one extra evaluation (diffusers' skip_prk_steps warm-up).
    """
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, sigmas, x, denoised)
        eps = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if i == 0 and len(sigmas) > 2:  # trapezoid warm-up: average eps at both ends of the step
            eps_next = to_d(x + eps * dt, sigmas[1], denoise(x + eps * dt, sigmas[1]))
            history.append(eps)
            x = x + (eps + eps_next) / 2 * dt
            continue
        history = (history + [eps])[-4:]
        e = history[::-1]  # newest first
        if len(e) == 1:
            eps_hat = e[0]
        elif len(e) == 2:
            eps_hat = (3 * e[0] - e[1]) / 2
        elif len(e) == 3:
            eps_hat = (23 * e[0] - 16 * e[1] + 5 * e[2]) / 12
        else:
            eps_hat = (55 * e[0] - 59 * e[1] + 37 * e[2] - 9 * e[3]) / 24
        x = x + eps_hat * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), first order on the first and the final step."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, sigmas, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised  # the first-order update to sigma 0 is exactly x0
            continue
        h = torch.log(sigmas[i]) - torch.log(sigmas[i + 1])  # step in lambda = -log sigma
        if old_denoised is None:
            d = denoised
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x
