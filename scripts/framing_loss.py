"""Which framing a model was trained on: its denoising loss on the same images under each `data.trim.fit`.

    python scripts/framing_loss.py DATA MODEL [MODEL ...] [--n 384] [--fits crop,fill,pad] [--seed 0]

Takes N images of DATA (a dataset folder; a seeded random draw), frames them with each fit (`ldmkit.data.trim`,
trim on, focus auto), encodes them with the first model's VAE (posterior means) and caption 1 with its text
encoder, and prints every model's min-SNR-5-weighted epsilon loss on them: the same images, noise and timesteps
for every model and framing. A model scores clearly lower on the framing it was trained on (docs/quality.md,
"The framing the shipped model was trained on": 0.036 with fill against 0.056 with crop for the shipped model).
Epsilon-prediction models only.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.trim import POLICIES, standardize
from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.errors import LdmkitError, UsageError
from ldmkit.models.folder import load_components
from ldmkit.training.objective import min_snr_weights, q_sample

MAX_N = 4096
BATCH = 64


def framed_pixels(images: list, fit: str, size: int) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1]: the PIL images framed with `fit`."""
    framed = [standardize(img, size, policy=fit)[0] for img in images]
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in framed]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def denoising_loss(components, latents: torch.Tensor, text: torch.Tensor, seed: int) -> float:
    """Mean min-SNR-5 weighted epsilon MSE over `latents` (scaled), with noise and timesteps drawn from `seed`."""
    if components.scheduler_config.get("prediction_type", "epsilon") != "epsilon":
        raise UsageError("framing_loss.py measures epsilon-prediction models only")
    alphas = NoiseSchedule.from_scheduler_config(components.scheduler_config).alphas_cumprod()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(latents), BATCH):
        x0 = latents[start:start + BATCH]  # (B, C, h, w)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, len(alphas), (len(x0),), generator=generator)
        states = text[start:start + BATCH]  # (B, L, D)
        pred = components.unet(q_sample(x0, noise, t, alphas), t, encoder_hidden_states=states).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        total += float((min_snr_weights(t, alphas, 5.0, "epsilon") * per_sample).sum())
    return total / len(latents)


def main(data: Path, models: list[str], n: int, fits: list[str], seed: int) -> None:
    dataset = CaptionDataset.open(data)  # any format ldmkit reads; one-line errors for a bad folder
    if len(dataset) == 0:
        raise UsageError(f"{data}: the dataset holds no images")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    images = [dataset.image(i) for i in pick]
    captions = [dataset.samples[i].captions[0] for i in pick]
    loaded = [load_components(m) for m in models]
    first = loaded[0]
    text = first.text_encoder.encode(captions).float()
    for fit in fits:
        pixels = framed_pixels(images, fit, first.image_size)
        with torch.no_grad():
            latents = torch.cat([first.vae.encode(pixels[i:i + BATCH]).latent_dist.mean
                                 for i in range(0, len(pixels), BATCH)]) * first.scaling_factor
        for name, components in zip(models, loaded):
            print(f"{fit:5s} {denoising_loss(components, latents, text, seed + 1):.4f}  {name}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="dataset folder (any format ldmkit reads)")
    parser.add_argument("models", nargs="+", help="model folders (the first one's VAE and text encoder are used)")
    parser.add_argument("--n", type=int, default=384, help=f"images to draw (1..{MAX_N}, default 384)")
    parser.add_argument("--fits", default="crop,fill", help="comma-separated data.trim.fit values (default crop,fill)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if not 1 <= args.n <= MAX_N:
            raise UsageError(f"--n must be in 1..{MAX_N}, got {args.n}")
        chosen = [f.strip() for f in args.fits.split(",") if f.strip()]
        if not chosen or any(f not in POLICIES for f in chosen):
            raise UsageError(f"--fits must list values of {POLICIES}, got {args.fits!r}")
        main(args.data, args.models, args.n, chosen, args.seed)
    except (LdmkitError, OSError) as err:
        sys.exit(f"error: {err}")
