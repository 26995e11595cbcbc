"""Noise schedules side by side: the same tiny UNet trained on `shapes` with each schedule, then `ldmkit eval`.

    python benchmarks/schedules.py [--out runs/bench-schedules] [--steps 400] [--batch 32] [--lr 0.002] [--size 32]
                                   [--n-images 1000] [--eval-n 96] [--only linear,cosine]

Every run is `ldmkit train unet --config configs/shapes-32.yaml` with the same data, seed, steps and batch
(`--set` overrides below), differing only in the schedule keys; the latents come through the shipped default
model's trained VAE (32 px -> 8x8x4; configs/shapes-32.yaml's own VAE would need `train vae` first), no EMA. Then
`ldmkit eval FINAL --data DATASET --split val` samples every model with the same sampler, steps, guidance and
seeds and reads the images back with the exact `shapes` reader. Printed: a markdown table of attribute accuracy
with bootstrap 95% intervals per schedule (results.json beside the runs also holds each run's last training loss,
which is not comparable across schedules: the noise levels and, for zero terminal SNR, the target differ).
The latent cache is encoded once and copied to the later runs (same VAE, text encoder and images).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> unet.* keys; end points are each schedule's usual ones (DDPM's for linear/sigmoid, SD's for scaled_linear)
SCHEDULES = {
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "sigmoid": {"beta_schedule": "sigmoid", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled_linear+ztsnr": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                            "zero_terminal_snr": "true", "prediction_type": "v_prediction"},
}
SAMPLING = ["--sampler", "dpmpp_2m", "--steps", "20", "--guidance", "5", "--seeds", "0"]


def ldmkit(*argv: str) -> None:
    """One ldmkit command, in this process (the CLI's own entry point); stops the benchmark if it fails."""
    from ldmkit.cli import main

    print("$ ldmkit " + " ".join(argv), flush=True)
    code = main(list(argv))
    if code:
        sys.exit(f"ldmkit {argv[0]} failed with exit code {code}")


def train_and_eval(name: str, keys: dict, args, dataset: Path, cache_from: Path | None) -> dict:
    run = args.out / name.replace("+", "-")
    if cache_from is not None and not run.exists():
        shutil.copytree(cache_from / "cache", run / "cache")  # same images, VAE and text encoder: encode once
    start = time.perf_counter()
    if not (run / "final").is_dir():  # a finished run of an interrupted benchmark is kept (--resume)
        ldmkit("train", "unet", "--config", str(ROOT / "configs" / "shapes-32.yaml"), "--out", str(run),
               "--set", f"data.path={dataset}", "--set", "data.builtin=shapes", "--set", f"data.builtin_n={args.n_images}",
               "--set", f"data.image_size={args.size}", "--set", "data.val_fraction=0.1",
               "--set", f"model.vae_from={ROOT / 'src' / 'ldmkit' / 'default_model'}",
               "--set", f"train.steps={args.steps}", "--set", f"train.batch_size={args.batch}",
               "--set", f"train.warmup_steps={max(1, args.steps // 10)}", "--set", "train.checkpoint_every=100000",
               "--set", "train.validate_every=0", "--set", "train.log_every=10", "--set", "train.ema_decay=0",
               "--set", f"train.lr={args.lr}",
               *[a for k, v in keys.items() for a in ("--set", f"unet.{k}={v}")])
    train_s = time.perf_counter() - start
    if not (run / "eval" / "metrics.json").is_file():
        shutil.rmtree(run / "eval", ignore_errors=True)  # an interrupted eval's partial folder
        ldmkit("eval", str(run / "final"), "--data", str(dataset), "--split", "val", "--n", str(args.eval_n),
               *SAMPLING, "-o", str(run / "eval"))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    scheduler = json.loads((run / "final" / "scheduler" / "scheduler_config.json").read_text())
    return {"name": name, "keys": keys, "train_s": round(train_s, 1), "final_loss": losses[-1] if losses else None,
            "scheduler": scheduler["_class_name"], "generated": metrics["conditions"][0]["metrics"]["shapes"],
            "vae_round_trip": metrics["reference"]["vae_round_trip"]["shapes"], "run": str(run)}


def ci(c: dict) -> str:
    return f"{c['estimate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


ATTRIBUTES = ("background", "color", "shape", "size", "count", "position")


def table(results: list[dict]) -> str:
    """Attribute accuracy of the generated images per schedule, then the VAE round trip of the real images
    (what a perfect UNet could reach through this VAE)."""
    lines = ["| schedule | saved scheduler | mean accuracy [95% CI] | " + " | ".join(ATTRIBUTES) + " |",
             "|---" * (len(ATTRIBUTES) + 3) + "|"]
    for r in results:
        t = r["generated"]
        cells = [ci(t["mean"])] + [f"{t['per_attribute'][a]['estimate']:.2f}" for a in ATTRIBUTES]
        lines.append(f"| {r['name']} | {r['scheduler']} | " + " | ".join(cells) + " |")
    t = results[0]["vae_round_trip"]
    cells = [ci(t["mean"])] + [f"{t['per_attribute'][a]['estimate']:.2f}" for a in ATTRIBUTES]
    lines.append("| *real images through the VAE* | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench-schedules"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--size", type=int, default=32, help="image side (the default VAE makes 32 px 8x8x4 latents)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=96)
    p.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --out")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(SCHEDULES))
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCHEDULES)
    unknown = set(names) - set(SCHEDULES)
    if unknown:
        p.error(f"unknown schedule(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCHEDULES)}")
    if args.out.exists() and any(args.out.iterdir()) and not args.resume:
        p.error(f"{args.out} exists and is not empty (results are never overwritten; --resume continues it)")
    dataset = args.out / "dataset"
    ldmkit("data", "build", "shapes", str(dataset), "--n", str(args.n_images), "--seed", "0", "--size", str(args.size))
    results, cache_from, start = [], None, time.perf_counter()
    for name in names:
        results.append(train_and_eval(name, SCHEDULES[name], args, dataset, cache_from))
        cache_from = Path(results[-1]["run"])
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{len(names)} schedules, {args.steps} steps x {args.batch} each, {args.eval_n} val captions; "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(table(results))


if __name__ == "__main__":
    main()
