"""Batched generation (`Pipeline.generate_batch`, what `ldmkit eval --batch` uses) vs one call per image.

    python benchmarks/batch_generation.py [--model DIR] [--images 32] [--batch 16] [--repeats 3] [--threads 2]

Both sides generate the same (prompt, seed) pairs with the model's default sampler, steps and guidance
(the shipped model by default); repeats are interleaved and the median ratio is reported, with the
largest pixel difference between the two sides' images (a batched UNet only changes float rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = ("a grinning face with sunglasses", "an avatar with red hair and a big smile", "a red heart",
           "an avatar with black hair, winking, wearing glasses", "a cat face", "a rocket",
           "an avatar with pastel pink hair and a surprised mouth", "a smiling sun")


def one_by_one(pipe, prompts: list[str], seeds: list[int]) -> list:
    return [pipe(prompt, seed=seed).images[0] for prompt, seed in zip(prompts, seeds)]


def batched(pipe, prompts: list[str], seeds: list[int], batch: int) -> list:
    images = []
    for at in range(0, len(prompts), batch):
        images += [r.images[0] for r in pipe.generate_batch(prompts[at:at + batch], seeds[at:at + batch])]
    return images


def main(argv: list[str] | None = None) -> int:
    from ldmkit.pipeline import Pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.model) if args.model else Pipeline.default()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    seeds = list(range(args.images))
    batched(pipe, prompts[:2], seeds[:2], 2)  # warm-up
    single_s, batch_s, diffs = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        alone = one_by_one(pipe, prompts, seeds)
        single_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        together = batched(pipe, prompts, seeds, args.batch)
        batch_s.append(time.perf_counter() - start)
        diffs.append(max(int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())
                         for a, b in zip(alone, together)))
    d = pipe.defaults()
    print(json.dumps({
        "model": pipe.components.meta.get("name", str(args.model)), "images": args.images, "batch": args.batch,
        "sampler": d["sampler"], "steps": d["steps"], "guidance": d["guidance"], "threads": torch.get_num_threads(),
        "one_by_one_images_per_s": [round(args.images / s, 2) for s in single_s],
        "batched_images_per_s": [round(args.images / s, 2) for s in batch_s],
        "median_speedup": round(statistics.median(a / b for a, b in zip(single_s, batch_s)), 2),
        "max_pixel_diff_255": max(diffs),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
