"""GPU check (run where CUDA exists): ldmkit vs diffusers on the GPU, same components and seeds.

    python benchmarks/gpu_check.py [--reps 5]

Prints, per preset and sampler: max pixel difference ldmkit-vs-diffusers (fp32), seconds per image
for both (interleaved, median), and the fp16-UNet fast path's speed and PSNR against fp32.
small64 is built with a random CLIP text encoder here (the packaged MiniLM weights need not be present).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "this check needs a CUDA device"
    import diffusers

    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline

    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} diffusers {diffusers.__version__}")
    classes = {"ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}
    for preset in ("tiny", "small64"):
        c = build_components(preset, seed=0, text_encoder="clip")
        ours = Pipeline(c, device="cuda")
        fast = Pipeline(copy.deepcopy(c), device="cuda", unet_dtype=torch.float16)
        size = ours.components.image_size
        for sampler, cls in classes.items():
            ref = diffusers.StableDiffusionPipeline(
                vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
                scheduler=getattr(diffusers, cls).from_config(c.scheduler_config), safety_checker=None,
                feature_extractor=None, requires_safety_checker=False).to("cuda")
            ref.set_progress_bar_config(disable=True)
            runs = {
                "ours": lambda: ours("a smiling face", sampler=sampler, steps=args.steps, seed=3).images[0],
                "diffusers": lambda: ref("a smiling face", num_inference_steps=args.steps, height=size, width=size,
                                         generator=torch.Generator().manual_seed(3)).images[0],
                "fp16": lambda: fast("a smiling face", sampler=sampler, steps=args.steps, seed=3).images[0],
            }
            times, imgs = {k: [] for k in runs}, {}
            for fn in runs.values():
                fn()
            for _ in range(args.reps):
                for k, fn in runs.items():
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    imgs[k] = np.asarray(fn(), dtype=np.float64)
                    torch.cuda.synchronize()
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            diff = np.abs(imgs["ours"] - imgs["diffusers"]).max()
            mse = np.mean((imgs["fp16"] - imgs["ours"]) ** 2)
            psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
            print(f"{preset:8} {sampler:9} maxdiff {diff:.0f}/255  ours {med['ours']*1000:7.1f} ms  "
                  f"diffusers {med['diffusers']*1000:7.1f} ms  ratio {med['diffusers']/med['ours']:.2f}  "
                  f"fp16 {med['fp16']*1000:7.1f} ms ({med['diffusers']/med['fp16']:.2f}x)  PSNR {psnr:.1f} dB")


if __name__ == "__main__":
    main()
