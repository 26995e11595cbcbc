"""Cost of a LoRA at generation: base model vs LoRA unfused (forward hooks) vs LoRA fused into the weights.

    python benchmarks/lora_apply.py [--model DIR] [--rank 8] [--steps 20] [--repeats 5] [--threads 2]

A random LoRA of the given rank on every attention projection (to_q/k/v/out.0) and 3x3 resnet conv of the UNet
(the shipped model by default). The three settings generate the same prompt and seed; repeats are interleaved
and the median time per image is reported with the ratio to the base model, and the largest pixel difference
between fused and unfused images (float rounding only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


def random_lora(unet, rank: int, seed: int = 0):
    from ldmkit.models.lora_files import LoraFile, LoraLayer, target_modules

    g = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in target_modules(unet).items():
        if name.endswith(TARGETS):
            w = module.weight
            down = torch.randn(rank, *w.shape[1:], generator=g) * 0.02
            up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.02
            layers[("unet", name)] = LoraLayer(down, up, float(rank))
    return LoraFile(layers, source="random")


def main(argv: list[str] | None = None) -> int:
    from ldmkit.pipeline import Pipeline
    from ldmkit.pipeline.lora import lora_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.model) if args.model else Pipeline.default()
    lora = random_lora(pipe.unet, args.rank)
    state = lora_state(pipe)

    def run():
        t = time.perf_counter()
        image = pipe("a grinning face with sunglasses", steps=args.steps, seed=0).images[0]
        return time.perf_counter() - t, np.asarray(image, dtype=np.int16)

    times = {"base": [], "unfused": [], "fused": []}
    images = {}
    run()  # warm-up
    for _ in range(args.repeats):
        state.unload()
        times["base"].append(run()[0])
        state.load(lora, 1.0)
        dt, images["unfused"] = run()
        times["unfused"].append(dt)
        state.fuse()
        dt, images["fused"] = run()
        times["fused"].append(dt)
    state.unload()
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"layers": len(lora.layers), "rank": args.rank, "steps": args.steps, "threads": args.threads,
           "seconds_per_image": {k: round(v, 3) for k, v in med.items()},
           "ratio_to_base": {k: round(v / med["base"], 3) for k, v in med.items()},
           "max_pixel_diff_fused_vs_unfused": int(np.abs(images["fused"] - images["unfused"]).max())}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
