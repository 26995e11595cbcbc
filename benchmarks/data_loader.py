"""Throughput of the cached training loader (target >= 2,000 samples/s for 64x64 images).

Writes a synthetic 64x64 dataset (5 captions per image), caches it with stand-in encoders of real shapes
(latents 4x8x8 with mean and std, text states 77x384 as from MiniLM), then times epochs of
`CachedLatents.iterate` (posterior samples, one random caption each). The in-run reference is the
uncached path: decoding every PNG into a [-1, 1] tensor, which the cache replaces.

    .venv/bin/python benchmarks/data_loader.py [--images 2048] [--batch 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TARGET = 2000.0
TEXT_SHAPE = (77, 384)


def write_dataset(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i:05d}.png")
        rows.append({"file_name": f"images/{i:05d}.png", "text": [f"caption {k} of image {i}" for k in range(5)]})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def encode_images(x):
    import torch

    mean = torch.nn.functional.avg_pool2d(x, 8)
    mean = torch.cat([mean, mean.mean(dim=1, keepdim=True)], dim=1)  # [B, 4, 8, 8]
    return mean, torch.full_like(mean, 0.05)


def encode_text(captions):
    import torch

    g = torch.Generator().manual_seed(len(captions))
    return torch.randn(len(captions), *TEXT_SHAPE, generator=g)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from ldmkit.data.cache import CacheSpec, build_cache, centre_crop_resize, image_tensor
    from ldmkit.data.dataset import CaptionDataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        write_dataset(root, args.images)
        start = time.perf_counter()
        dataset = CaptionDataset.open(root)
        open_s = time.perf_counter() - start

        start = time.perf_counter()
        for sample in dataset.samples:
            image_tensor(sample, 64, centre_crop_resize)
        decode_rate = len(dataset) / (time.perf_counter() - start)

        start = time.perf_counter()
        spec = CacheSpec(image_encoder="bench-pool", text_encoder="bench-randn", size=64)
        cache = build_cache(dataset, Path(tmp) / "cache", encode_images=encode_images, encode_text=encode_text,
                            spec=spec, preprocess=centre_crop_resize, batch_size=64)
        build_s = time.perf_counter() - start

        g = torch.Generator().manual_seed(0)
        seen, start = 0, time.perf_counter()
        for _ in range(args.epochs):
            for batch in cache.iterate(args.batch, g):
                seen += len(batch.image_ids)
        rate = seen / (time.perf_counter() - start)

    print(f"images: {len(dataset)}  open+check: {open_s:.2f} s  cache build: {build_s:.2f} s")
    print(f"{'path':<34}{'samples/s':>10}")
    print(f"{'decode PNG -> tensor (reference)':<34}{decode_rate:>10.0f}")
    print(f"{'cached latents + text states':<34}{rate:>10.0f}   x{rate / decode_rate:.1f} the reference")
    print(f"target >= {TARGET:.0f} samples/s: {'ok' if rate >= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
