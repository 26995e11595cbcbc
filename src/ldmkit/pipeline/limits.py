"""Every bound on a sampling request, in one place (shown in `ldmkit generate --help`, README "Limits").

Nothing here imports torch: the CLI checks a request against these before any model loads. Only the
pixel budget is a per-request setting (`SamplingSettings.max_pixels`, `--max-pixels`); the rest are
bounds no legitimate request comes near.
"""

from __future__ import annotations

MAX_PROMPT_CHARS = 4000
"""Characters in a prompt or negative prompt (the text encoders read ~77 tokens, ~300 characters;
longer prompts are truncated to the tokens with a warning, this bound only refuses absurd input)."""
MAX_PNG_TEXT_CHARS = 2 * MAX_PROMPT_CHARS + 1000
"""Characters in the PNG `parameters` text chunk: both prompts plus the settings line."""
MAX_PIXELS = 2048 * 2048
"""Default pixel budget per image (width x height), checked before anything is allocated; `--max-pixels`."""
MAX_INIT_IMAGE_PIXELS = 8192 * 8192
"""Pixels an init image may have when decoded (a large photo; it is resized before sampling)."""
MAX_STEPS = 1000
"""Denoising steps (and never more than the model's training timesteps)."""
MAX_IMAGES = 10_000
"""Images per request (`--n`; with `--prompts`, per prompt)."""
MAX_SEED = 2**64 - 1
"""Seeds are 64-bit unsigned (torch.Generator's range); -1 asks for a random one (the A1111 convention)."""
SAMPLING_MEMORY_BYTES = 4 * 2**30
"""Estimated memory one sampling run may use; more images than fit are sampled in further runs."""
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")
"""How inference timesteps are picked from the training ones (diffusers' `timestep_spacing`)."""


def bytes_per_image(width: int, height: int, *, factor: int, vae_channels: int, unet_channels: int,
                    latent_channels: int, guided: bool) -> int:
    """A rough peak-memory estimate (bytes) for sampling and decoding one width x height image.

    The larger of: the VAE decoder's full-resolution stage (~10 fp32 tensors of pixels x its first-block
    channels alive at once) and the UNet at latent resolution (~16 tensors of its widest channels, twice
    the batch with classifier-free guidance), plus the latents. It only has to be the right order of
    magnitude: it decides how many images are sampled together, never whether one image is allowed
    (that is `max_pixels`). small64 on a CPU, measured peak RSS growth vs this estimate: 2 images at
    256 px 279-363 MB vs 321 MB; 1 image at 512 px 558-591 MB vs 642 MB (several runs).
    """
    pixels = width * height
    latent_pixels = max(1, pixels // (factor * factor))
    decoder = pixels * vae_channels * 4 * 10
    unet = latent_pixels * unet_channels * 4 * 16 * (2 if guided else 1)
    return max(decoder, unet) + latent_pixels * latent_channels * 4 * 8


def images_per_run(per_image_bytes: int, budget: int = SAMPLING_MEMORY_BYTES) -> int:
    """How many images of `per_image_bytes` one sampling run takes under `budget` (always at least one)."""
    return max(1, budget // max(1, per_image_bytes))


def limits_help() -> str:
    """One paragraph for `--help`."""
    side = int(MAX_PIXELS**0.5)
    return (f"limits: prompts <= {MAX_PROMPT_CHARS} characters; width x height <= --max-pixels "
            f"(default {MAX_PIXELS} = {side}x{side}); init images <= {MAX_INIT_IMAGE_PIXELS} pixels when decoded; "
            f"steps 1..{MAX_STEPS}; --n <= {MAX_IMAGES}; seed 0..2^64-1 or -1 (random); images are sampled "
            f"in runs of at most ~{SAMPLING_MEMORY_BYTES // 2**30} GiB (estimated), larger --n is split.")
