"""Reconstruction metrics of the VAE trainer: PSNR and SSIM on images in [0, 1] ([B, C, H, W])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004, eq. 7 (dynamic range L = 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB for peak 1.0: -10 log10(MSE); [B]."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean structural similarity (Wang et al. 2004) with a Gaussian window, channels averaged; [B].

    The window shrinks to the image for images smaller than it; statistics use 'valid' positions only.
    """
    a, b = a.double(), b.double()  # float64: E[x^2] - E[x]^2 cancels badly in float32
    channels = a.shape[1]
    window = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(window, sigma, channels).to(a.device, torch.float64)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1).float()


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical finite differences of a and b (a structure loss)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()
