"""UniPC: a unified predictor-corrector multistep sampler (Zhao et al. 2023, arXiv:2302.04867).

Written in VE latents x = x0 + sigma * eps with lambda = -log sigma, as sample_dpmpp_2m is. From the
x0 estimates m_0 (at sigma_s, the newest) and m_k (at earlier sigmas), one update to sigma_t is

    x_t = (sigma_t / sigma_s) x_s - expm1(-h) m_0 - B(h) * sum_k rho_k (m_k - m_0) / r_k

with h = lambda_t - lambda_s and r_k = (lambda_k - lambda_s) / h: the paper's data-prediction
update (§3) divided by alpha_t. UniP-p uses the p-1 earlier points; UniC-p, run once the model has
seen the predicted x_t, redoes the same update with x_t's own estimate added at r = 1, which raises
the order by one at no extra model evaluation. The weights rho solve the order conditions
sum_k rho_k r_k^(i-1) = i! * phi_{i+1}(-h) * (-h) / B(h), i = 1..K, with the paper's two choices
of B(h) in these signs, bh1: B = -h and bh2: B = expm1(-h). With a single point rho = 1/2, the
h -> 0 limit, as diffusers does.
"""

from __future__ import annotations

import math

import torch

from ldmkit.diffusion.samplers import Denoise, Generator, _report
from ldmkit.errors import UsageError

SOLVER_TYPES = ("bh1", "bh2")


def unipc_weights(h: float, rs: list[float], solver_type: str) -> tuple[float, list[float]]:
    """B(h) and the weights rho_k of the difference terms at relative positions rs (the order conditions)."""
    z = -h  # the step in lambda, negated: data prediction integrates e^{-lambda}
    big_b = z if solver_type == "bh1" else math.expm1(z)
    if len(rs) == 1:
        return big_b, [0.5]
    phi, fact, b = math.expm1(z) / z, 1, []  # phi_1(z) = (e^z - 1) / z
    for k in range(1, len(rs) + 1):
        fact *= k
        phi = (phi - 1 / fact) / z  # phi_{k+1}(z) = (phi_k(z) - 1/k!) / z
        b.append(z * fact * phi / big_b)
    vandermonde = torch.tensor([[r**i for r in rs] for i in range(len(rs))], dtype=torch.float64)
    return big_b, torch.linalg.solve(vandermonde, torch.tensor(b, dtype=torch.float64)).tolist()


def unipc_update(x: torch.Tensor, sigma_s: float, sigma_t: float, points: list[tuple[float, torch.Tensor]],
                 solver_type: str, new: torch.Tensor | None = None) -> torch.Tensor:
    """Move x from sigma_s to sigma_t with x0 estimates `points` = [(lambda, x0)], newest (at sigma_s)
    last: UniP when `new` is None, else UniC with `new` the x0 estimate at sigma_t."""
    lam_s, m0 = points[-1]
    h = math.log(sigma_s / sigma_t)
    rs = [(lam - lam_s) / h for lam, _ in points[:-1]]
    ds = [(m - m0) / r for (_, m), r in zip(points[:-1], rs)]
    if new is not None:
        rs, ds = rs + [1.0], ds + [new - m0]
    x = (sigma_t / sigma_s) * x - math.expm1(-h) * m0
    if ds:
        big_b, rho = unipc_weights(h, rs, solver_type)
        x = x - big_b * sum(w * d for w, d in zip(rho, ds))
    return x


@torch.no_grad()
def sample_unipc(denoise: Denoise, x, sigmas, *, generator: Generator = None, callback=None, order: int = 2,
                 solver_type: str = "bh2", lower_order_final: bool = True, disable_corrector: tuple = ()):
    """UniPC-p (Zhao et al. 2023): UniP-p predictor then UniC corrector, in data (x0) prediction.

    Multistep warm-up: step i has order min(order, i + 1), and with `lower_order_final` at most the
    number of steps left. The step to sigma 0 is first order (x = x0), the only finite choice there.
    The result of step k is not corrected when k is in `disable_corrector` (as in diffusers).
    `callback` sees x after correction: the latents the next step starts from.
    """
    if order not in (1, 2, 3):
        raise UsageError(f"UniPC order must be 1, 2 or 3, got {order}")
    if solver_type not in SOLVER_TYPES:
        raise UsageError(f"UniPC solver_type {solver_type!r} is not one of {', '.join(SOLVER_TYPES)}")
    s = sigmas.tolist()
    n = len(s) - 1
    history: list[tuple[float, torch.Tensor]] = []  # [(lambda, x0 estimate)] of the last `order` steps, newest last
    points, x_prev = [], None  # what the last predictor used, and its input
    for i in range(n):
        denoised = denoise(x, sigmas[i])
        if x_prev is not None and i - 1 not in disable_corrector:
            x = unipc_update(x_prev, s[i - 1], s[i], points, solver_type, new=denoised)
        _report(callback, i, sigmas, x, denoised)
        if s[i + 1] == 0:
            x, x_prev = denoised, None
            continue
        p = min(order, i + 1, n - i if lower_order_final else order)
        history = (history + [(-math.log(s[i]), denoised)])[-order:]
        points = history[-p:]
        x_prev, x = x, unipc_update(x, s[i], s[i + 1], points, solver_type)
    return x
