"""How close the UNet training step comes to the machine's matmul peak, by width, precision and attention kernel.

    python benchmarks/unet_step.py [--widths 1,2,3] [--batch 32] [--steps 3] [--repeats 3] [--threads 2]
                                   [--modes fp32-flash,fp32-math,bf16-flash,bf16-math]

One training step = UNet forward + MSE + backward + fused AdamW step, on random latents (16x16x4) and
random 77x384 text states (the default model's MiniLM width). Width k scales the default model's UNet
(small64: channels 64/128/256, 13M parameters) to channels k*64/k*128/k*256 with k times the heads, so
the head size stays 32. Modes: fp32 or bf16 autocast (as accelerate does it), with torch's CPU flash
attention kernel or the math path (bmm + softmax). `ldmkit.training.loop` picks math under bf16 on a CPU
and flash otherwise; this script is where that choice is measured.

FLOPs are counted once per width by torch's FlopCounterMode with the math attention path, so attention's
matmuls are included (the flash kernel is invisible to the counter); every mode is credited with the same
count. Repeats are interleaved (each round runs every mode once) and the median is reported, because the
machine is noisy; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import matmul_peak  # noqa: E402  (the same peak measurement as benchmarks/training.py)

MODES = ("fp32-flash", "fp32-math", "bf16-flash", "bf16-math")


def unet_config(width: int) -> dict:
    """The default model's UNet config with channels and heads multiplied by `width`."""
    from ldmkit.models.presets import PRESETS

    cfg = dict(PRESETS["small64"].unet)
    cfg["block_out_channels"] = tuple(width * c for c in cfg["block_out_channels"])
    cfg["attention_head_dim"] = tuple(width * h for h in cfg["attention_head_dim"])
    return cfg


def _context(mode: str) -> contextlib.ExitStack:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    precision, kernel = mode.split("-")
    stack = contextlib.ExitStack()
    stack.enter_context(sdpa_kernel(SDPBackend.MATH if kernel == "math" else SDPBackend.FLASH_ATTENTION))
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"))
    return stack


class Bench:
    """A seeded UNet with its optimizer and one fixed batch."""

    def __init__(self, width: int, batch: int, context_dim: int = 384, tokens: int = 77) -> None:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        cfg = unet_config(width)
        self.unet = UNet2DConditionModel(**cfg).train()
        self.params = sum(p.numel() for p in self.unet.parameters())
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=1e-4, fused=True)
        size = cfg["sample_size"]
        self.x = torch.randn(batch, cfg["in_channels"], size, size)
        self.context = torch.randn(batch, tokens, context_dim)
        self.t = torch.randint(0, 1000, (batch,))

    def step(self, mode: str) -> None:
        with _context(mode):
            prediction = self.unet(self.x, self.t, self.context).sample
        torch.nn.functional.mse_loss(prediction.float(), self.x).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def flops(self) -> float:
        """FLOPs of forward + backward (attention included: counted on the math path)."""
        from torch.utils.flop_counter import FlopCounterMode

        with _context("fp32-math"), FlopCounterMode(display=False) as counter:
            self.unet(self.x, self.t, self.context).sample.sum().backward()
        self.unet.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    def seconds_per_step(self, mode: str, steps: int) -> float:
        self.step(mode)  # warm-up: first-call allocations, oneDNN primitive creation
        start = time.perf_counter()
        for _ in range(steps):
            self.step(mode)
        return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="1,2,3", help="comma-separated channel multipliers of small64's UNet")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, among {', '.join(MODES)}")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        p.error(f"unknown mode(s) {unknown}; allowed: {', '.join(MODES)}")
    peaks = [(matmul_peak("cpu"), matmul_peak("cpu", dtype=torch.bfloat16))]
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        bench = Bench(width, args.batch)
        flops = bench.flops()
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):
            for mode in modes:
                times[mode].append(bench.seconds_per_step(mode, args.steps))
        for mode in modes:
            seconds = statistics.median(times[mode])
            rows.append({
                "width": width, "params_m": round(bench.params / 1e6, 1), "mode": mode, "batch": args.batch,
                "gflop_per_step": round(flops / 1e9, 1), "s_per_step": [round(s, 4) for s in times[mode]],
                "samples_per_s": round(args.batch / seconds, 1), "gflop_per_s": round(flops / seconds / 1e9, 1),
            })
    # the peak moves by a few % between runs (clock); the higher of a measurement before and after is the
    # conservative denominator
    peaks.append((matmul_peak("cpu"), matmul_peak("cpu", dtype=torch.bfloat16)))
    fp32_peak, bf16_peak = max(p[0] for p in peaks), max(p[1] for p in peaks)
    for row in rows:
        row["fraction_of_fp32_peak"] = round(row["gflop_per_s"] * 1e9 / fp32_peak, 3)
        row["fraction_of_bf16_peak"] = round(row["gflop_per_s"] * 1e9 / bf16_peak, 3)
        print(json.dumps(row))
    print(json.dumps({"threads": torch.get_num_threads(), "fp32_matmul_peak_gflop_per_s": round(fp32_peak / 1e9, 1),
                      "bf16_matmul_peak_gflop_per_s": round(bf16_peak / 1e9, 1),
                      "peaks_before_after_gflop_per_s": [[round(a / 1e9, 1), round(b / 1e9, 1)] for a, b in peaks]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
