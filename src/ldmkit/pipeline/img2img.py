"""Image-to-image (SDEdit, Meng et al. 2022): start from an image's latents noised to the strength's level.

The pieces `Pipeline` composes for an init image: the sampling size an image implies, the resize to it
(also used by the server, which stores uploads at the sampling size), and the noised start latents.
"""

from __future__ import annotations

import torch
from PIL import Image

from ldmkit.diffusion.samplers import gaussian_like


def fit_size(size: tuple[int, int], side: int, factor: int, notes: list[str]) -> tuple[int, int]:
    """The sampling size for an init image given without a size: its own, scaled down (aspect kept) when
    larger than the model's `side`, rounded down to multiples of the VAE `factor`; a note when it changes."""
    w, h = size
    scale = min(1.0, side / max(w, h))
    fw, fh = (max(factor, int(v * scale) // factor * factor) for v in (w, h))
    if (fw, fh) != (w, h):
        why = f"larger than the model's {side}x{side}" if scale < 1 else f"not a multiple of the VAE factor {factor}"
        notes.append(f"init image {w}x{h} is {why}: sampling at {fw}x{fh} (pass --size WxH to choose)")
    return fw, fh


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` at width x height (Lanczos), unchanged when it already has that size."""
    if image.size == (width, height):
        return image
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def noised_start(x0: torch.Tensor, generators: list[torch.Generator], sigma_steps, steps: int, strength: float):
    """(start latents, the sigma steps still to run): the last int(steps * strength) steps of `sigma_steps`,
    from x0 plus noise at their first sigma. With no step left (strength ~0), x0 itself and no step: the
    VAE round trip."""
    start = steps - min(int(steps * strength), steps)
    sigma_steps = sigma_steps.tail(start)
    if start >= steps:
        return x0.clone(), type(sigma_steps)(torch.zeros_like(sigma_steps.sigmas[-1:]), sigma_steps.timesteps[:0])
    return x0 + gaussian_like(x0, generators) * sigma_steps.sigmas[0], sigma_steps
