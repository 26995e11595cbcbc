"""Seconds per image: ldmkit vs diffusers' StableDiffusionPipeline on identical components.

    .venv/bin/python benchmarks/sampling.py [--reps 5] [--presets tiny small64] [--threads 2]

Repetitions are interleaved (ours, diffusers, ours-fast, ...) so machine noise hits all alike; we print
median seconds per image, the median ratio diffusers/ours (> 1 means ldmkit is faster), the max pixel
difference ours-vs-diffusers (fp32), and the PSNR of the --fast (bf16 UNet) image against fp32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small64"])
    ap.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp_2m"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="fast path = bf16 UNet + torch.compile (freezing)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import diffusers

    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline

    classes = {"ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler"}
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
          f"{args.steps} steps, guidance 7.5, batch 1, median of {args.reps} interleaved runs")
    print(f"{'preset':8} {'sampler':9} {'ldmkit s':>9} {'diffusers s':>11} {'ratio':>6} {'maxdiff':>7} "
          f"{'fast s':>7} {'fast ratio':>10} {'fast PSNR':>9}")
    for preset in args.presets:
        c = build_components(preset, seed=0)
        fast_c = copy.deepcopy(c)
        ours = Pipeline(c)
        t0 = time.perf_counter()
        fast = Pipeline(fast_c, unet_dtype=torch.bfloat16, compile=args.compile)
        fast("compile warm-up", steps=2)
        print(f"{preset}: fast path set-up (bf16{' + compile' if args.compile else ''}) {time.perf_counter() - t0:.1f} s")
        for sampler in args.samplers:
            sched = getattr(diffusers, classes[sampler]).from_config(c.scheduler_config)
            ref = diffusers.StableDiffusionPipeline(
                vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
                scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            ref.set_progress_bar_config(disable=True)
            size = ours.components.image_size

            def run_ours(p=ours):
                return p("a smiling face with sunglasses", sampler=sampler, steps=args.steps, seed=1).images[0]

            def run_ref():
                return ref("a smiling face with sunglasses", num_inference_steps=args.steps, height=size, width=size,
                           generator=torch.Generator().manual_seed(1)).images[0]

            times = {"ours": [], "ref": [], "fast": []}
            imgs = {}
            run_ours(), run_ref(), run_ours(fast)  # warm-up
            for _ in range(args.reps):
                for key, fn in (("ours", run_ours), ("ref", run_ref), ("fast", lambda: run_ours(fast))):
                    t0 = time.perf_counter()
                    imgs[key] = fn()
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = statistics.median(r / o for r, o in zip(times["ref"], times["ours"]))
            fast_ratio = statistics.median(r / f for r, f in zip(times["ref"], times["fast"]))
            maxdiff = int(np.abs(np.asarray(imgs["ours"], dtype=int) - np.asarray(imgs["ref"], dtype=int)).max())
            print(f"{preset:8} {sampler:9} {med['ours']:9.3f} {med['ref']:11.3f} {ratio:6.2f} {maxdiff:5d}/255 "
                  f"{med['fast']:7.3f} {fast_ratio:10.2f} {psnr(imgs['fast'], imgs['ours']):8.1f}dB")


if __name__ == "__main__":
    main()
