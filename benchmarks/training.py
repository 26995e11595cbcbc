"""UNet training throughput: `ldmkit train unet` (cached latents) vs diffusers' train_text_to_image.py step.

    python benchmarks/training.py [--preset small64] [--batch 16] [--steps 10] [--repeats 3] [--device cpu]
                                  [--text-encoder minilm] [--mixed-precision bf16]

The reference re-implements the step of diffusers' examples/text_to_image/train_text_to_image.py:
VAE-encode the pixels and run the text encoder on every step, sample noise and timesteps, add noise,
predict, MSE, backward, AdamW step. ldmkit's step reads latents and text states from the cache built
once through ldmkit.data.cache (the same VAE, text encoder, UNet, batch size and images), and runs
through the real training loop (`ldmkit.training.loop.train`). Prints samples/s of each (ldmkit:
the steps as metrics.jsonl reports them, and the whole train() call including the end-of-run
checkpoint and final/ save), the median ratio over interleaved repeats (target >= 2x), and the achieved
FLOP/s of ldmkit's training step (UNet forward + backward FLOPs, attention included, counted by torch's
FlopCounterMode; times the loop's samples/s) over this machine's measured fp32 matmul peak (and, for
bf16, also over the measured bf16 matmul peak). benchmarks/unet_step.py breaks the step down by width,
precision and attention kernel.

`--text-encoder minilm` uses the default model's text encoder (the packaged MiniLM, 6 layers, 384-d)
instead of the preset's; `--mixed-precision bf16` runs BOTH sides in bf16 the way each does it: ldmkit
through `train.mixed_precision=bf16` (accelerate autocast), the reference as train_text_to_image.py does
with `--mixed_precision bf16` (VAE and text encoder weights cast to bf16, the UNet forward under autocast).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def matmul_peak(device: str, n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best measured FLOP/s of an n x n matmul in `dtype`."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference_steps(task, batch_size: int, steps: int, device: str, mixed_precision: str = "no") -> float:
    """samples/s of the diffusers train_text_to_image step (encodes images and captions every step)."""
    import contextlib
    import copy

    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from ldmkit.training.run_data import load_pixels

    c = task.components
    weight_dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float32
    # the script casts the frozen VAE and text encoder to the mixed-precision dtype (copies: the task's stay fp32)
    unet, vae, text = c.unet.to(device), copy.deepcopy(c.vae).to(device, weight_dtype), c.text_encoder
    text_model = copy.deepcopy(text.model).to(device, weight_dtype)
    autocast = (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)) if mixed_precision == "bf16" \
        else contextlib.nullcontext
    scheduler = DDPMScheduler.from_config({k: v for k, v in c.scheduler_config.items() if not k.startswith("_")})
    pixels = load_pixels(task.train, task.recipe.data.image_size)
    captions = [s.captions[0] for s in task.train.samples]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    unet.train()
    g = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        ids = torch.randint(0, len(pixels), (batch_size,), generator=g)
        x = pixels[ids].to(device)
        ids_text = text.tokenizer([captions[j] for j in ids.tolist()], padding="max_length",
                                  max_length=text.max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():  # as the script: frozen VAE and text encoder, run every step
            latents = vae.encode(x.to(weight_dtype)).latent_dist.sample() * vae.config.scaling_factor
            states = text_model(ids_text.input_ids.to(device)).last_hidden_state
        latents = latents.float()
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        with autocast():  # accelerate's autocast around the prepared UNet's forward
            pred = unet(noisy, t, states).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def ldmkit_steps(task, cfg, run_dir: Path) -> tuple[float, float]:
    """samples/s of the real loop over cached latents (the cache is already built by the task):
    (training steps only, as the loop's metrics.jsonl reports them; whole train() call, which also
    writes the end-of-run checkpoint with its model folder and final/)."""
    from dataclasses import replace

    from ldmkit.training.loop import train

    train(task, replace(cfg, steps=1), run_dir / "warmup")  # warm-up (first-call allocations)
    start = time.perf_counter()
    result = train(task, cfg, run_dir / "timed")
    wall = result.samples_seen / (time.perf_counter() - start)
    rows = [json.loads(line) for line in (run_dir / "timed" / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "samples_per_s" in row]
    assert len(logged) == 1 and logged[0]["step"] == cfg.steps, "log_every must equal steps"
    return logged[0]["samples_per_s"], wall


def unet_step_flops(task, batch_size: int, device: str) -> float:
    """FLOPs of one UNet forward + backward at this batch size, attention included (counted on the math
    attention path: torch's flash kernels are invisible to FlopCounterMode)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    c = task.components
    unet = c.unet.to(device)
    sample = torch.randn(batch_size, *c.latent_shape(task.recipe.data.image_size), device=device)
    context = torch.randn(batch_size, c.text_encoder.max_length, c.text_encoder.hidden_size, device=device)
    t = torch.randint(0, 1000, (batch_size,), device=device)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        unet(sample, t, context).sample.sum().backward()
    unet.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    from ldmkit.config import TrainConfig, load_recipe
    from ldmkit.training.recipes import UNetRecipe
    from ldmkit.training.unet import UNetTask

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small64")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--text-encoder", default=None, metavar="clip|minilm",
                   help="text encoder (default: the preset's; minilm = the default model's)")
    p.add_argument("--mixed-precision", choices=("no", "bf16"), default="no", help="both sides (default: no)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = {"tiny": 32}.get(args.preset, 64)
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe = load_recipe(root / "configs" / "tiny.yaml", UNetRecipe, [
            f"model.preset={args.preset}", f"data.image_size={size}", f"data.builtin_n={args.images}",
            "unet.min_snr_gamma=0", "unet.caption_dropout=0"]
            + ([f"model.text_encoder={args.text_encoder}"] if args.text_encoder else []))
        task = UNetTask(recipe, tmp / "run")
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=0, log_every=args.steps,
                          progress_bar=False, grad_clip=1.0, mixed_precision=args.mixed_precision)
        ours, ours_wall, ref = [], [], []
        for r in range(args.repeats):
            steps_only, wall = ldmkit_steps(task, cfg, tmp / f"ours{r}")
            ours.append(steps_only)
            ours_wall.append(wall)
            ref.append(reference_steps(task, args.batch, args.steps, args.device, args.mixed_precision))
        ratios = [a / b for a, b in zip(ours, ref)]
        flops = unet_step_flops(task, args.batch, args.device)
        peak = matmul_peak(args.device)
        ours_med = statistics.median(ours)
        achieved = flops * ours_med / args.batch
        extra = {}
        if args.mixed_precision == "bf16":
            bf16_peak = matmul_peak(args.device, dtype=torch.bfloat16)
            extra = {"bf16_matmul_peak_gflop_per_s": bf16_peak / 1e9, "fraction_of_bf16_peak": achieved / bf16_peak}
        report = {
            "preset": args.preset, "text_encoder": task.components.text_encoder.kind,
            "mixed_precision": args.mixed_precision, "batch": args.batch, "steps": args.steps, "device": args.device,
            "threads": torch.get_num_threads(),
            "ldmkit_samples_per_s": ours, "ldmkit_wall_samples_per_s": ours_wall,
            "diffusers_script_samples_per_s": ref,
            "median_ratio": statistics.median(ratios), "target_ratio": 2.0,
            "median_ratio_wall": statistics.median(a / b for a, b in zip(ours_wall, ref)),
            "unet_step_gflop": flops / 1e9, "achieved_gflop_per_s": achieved / 1e9,
            "matmul_peak_gflop_per_s": peak / 1e9, "fraction_of_peak": achieved / peak, **extra,
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
