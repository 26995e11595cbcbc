"""Is mirroring a latent the same as encoding the mirrored image? (Why the UNet cache encodes mirrors.)

Encodes built-in avatars with the shipped default model's VAE and compares flip(E(x)) with E(flip(x)),
and what each decodes to against the mirrored image.

    .venv/bin/python benchmarks/flip_latents.py [--n 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def run(n: int = 64) -> dict[str, float]:
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    from ldmkit.data.builtin import build_dataset

    folder = Path(__file__).resolve().parents[1] / "src" / "ldmkit" / "default_model" / "vae"
    vae = AutoencoderKL.from_pretrained(str(folder)).float().eval()
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset("avatars", Path(tmp) / "a", n=n, seed=0, size=64)
        files = sorted((Path(tmp) / "a").rglob("*.png"))[:n]
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)).permute(2, 0, 1)
                         for f in files]) / 127.5 - 1

    def norm(t):
        return t.flatten(1).norm(dim=1)

    def psnr(a, b):
        return float((10 * torch.log10(4 / ((a - b) ** 2).mean(dim=(1, 2, 3)))).mean())

    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        mirrored = vae.encode(torch.flip(x, dims=(-1,))).latent_dist.mean
        gap = norm(mirrored - torch.flip(mean, dims=(-1,)))
        from_latent = vae.decode(torch.flip(mean, dims=(-1,))).sample.clamp(-1, 1)
        from_image = vae.decode(mirrored).sample.clamp(-1, 1)
    target = torch.flip(x, dims=(-1,))
    return {"n": len(files), "relative_gap": float((gap / norm(mean)).mean()),
            "gap_vs_other_image": float((gap / norm(mean - mean.roll(1, 0))).mean()),
            "psnr_flipped_latent": psnr(from_latent, target), "psnr_encoded_mirror": psnr(from_image, target)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    r = run(parser.parse_args(argv).n)
    print(f"{r['n']} avatars, default model VAE: |E(flip x) - flip(E x)| / |E x| = {r['relative_gap']:.3f} "
          f"({r['gap_vs_other_image']:.3f} of the gap between two different avatars' latents)")
    print(f"PSNR against the mirrored image: decode(flip(E x)) {r['psnr_flipped_latent']:.2f} dB, "
          f"decode(E(flip x)) {r['psnr_encoded_mirror']:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
