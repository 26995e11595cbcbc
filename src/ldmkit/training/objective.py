"""The denoising objective: forward process, targets and loss weights (pure functions, no modules).

Notation (Ho et al. 2020): x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, ab = alphas_cumprod.
"""

from __future__ import annotations

import torch


def _per_sample(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped [B, 1, 1, ...] to broadcast over a [B, ...] tensor of `ndim` dims."""
    return values.to(t.device)[t].float().view(-1, *[1] * (ndim - 1))  # [T] -> [B] -> [B, 1, 1, 1]


def q_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t drawn from q(x_t | x_0) with the given noise (Ho et al. 2020, eq. 4)."""
    ab = _per_sample(alphas_cumprod, t, x0.ndim)  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise  # (B, C, h, w)


def velocity(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x_0 (Salimans & Ho 2022, §4)."""
    ab = _per_sample(alphas_cumprod, t, x0.ndim)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


def snr(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ab / (1 - ab) of each timestep, float32 [B]."""
    ab = alphas_cumprod.to(t.device)[t].float()
    return ab / (1 - ab)


def min_snr_weights(t: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023, eq. 8 and its v-prediction form).

    The weight on the x_0 error is min(SNR, gamma); expressed on an epsilon loss it is min(SNR, gamma)/SNR,
    on a v loss min(SNR, gamma)/(SNR + 1). gamma = 0 gives ones (plain MSE).
    """
    if gamma <= 0:
        return torch.ones(t.shape, device=t.device)
    s = snr(t, alphas_cumprod)
    clipped = torch.clamp(s, max=gamma)
    return clipped / (s + 1) if prediction_type == "v_prediction" else clipped / s


def offset_noise(noise: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """noise + scale * one N(0, 1) value per sample and channel (Guttenberg 2023, "offset noise")."""
    if scale <= 0:
        return noise
    shift = torch.randn(noise.shape[:2], generator=generator).to(noise.device, noise.dtype)
    return noise + scale * shift.view(*noise.shape[:2], *[1] * (noise.ndim - 2))  # [B, C] -> [B, C, 1, 1]


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample, float32 [B]."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)  # [B, C, h, w] -> [B, C*h*w] -> [B]


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over samples of weight * per-sample MSE."""
    return (weights * per_sample_mse(prediction, target)).mean()
