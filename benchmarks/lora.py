"""LoRA against full fine-tuning of the same UNet (training speed, memory), and a LoRA's cost at generation.

    python benchmarks/lora.py [--batch 32] [--steps 10] [--repeats 3] [--rank 4] [--targets attention]
                              [--threads 2] [--apply-steps 25] [--apply-repeats 3] [--no-apply]

Training: the shipped default model's UNet (small64, fp32), one fixed batch of random 16x16x4 latents and
77x384 text states, noise at random timesteps, MSE on the noise + backward + the training loop's own AdamW
(`ldmkit.training.schedule.build_optimizer`). "full" trains every UNet weight; "lora" freezes the UNet and adds
peft adapters to the modules `ldmkit train lora` targets (`ldmkit.training.lora_task.lora_targets`), initialised
as that task does (up weights at zero). Each measurement runs in a fresh process, so its peak resident memory
(Linux VmHWM, reset after the model and batch are built) is its own; the modes alternate within each repeat,
and the order alternates between repeats. Reported per mode: samples/s per repeat, peak RSS increase during
training, and the exact bytes of trainable weights, gradients and optimizer state; then the per-repeat ratios
lora/full (median and range).

Generation: `benchmarks/lora_apply.py` (base model vs LoRA unfused vs fused, interleaved) is run in the same
invocation and its seconds per image are turned into images/s and ratios to the base model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("full", "lora")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where it is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(mode: str, *, batch: int, steps: int, rank: int, targets: str, threads: int) -> dict:
    """One mode's training measurement in this process (called in a child process by main)."""
    import torch
    from diffusers import UNet2DConditionModel

    from ldmkit.config.training import TrainConfig
    from ldmkit.models.packaged import default_model_dir
    from ldmkit.training.lora_task import lora_targets
    from ldmkit.training.schedule import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(default_model_dir() / "unet").float().train()
    if mode == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=float(rank), target_modules=lora_targets(unet, targets),
                                    init_lora_weights=True))  # peft: down random, up zero, as lora_task
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, TrainConfig(lr=1e-4))
    g = torch.Generator().manual_seed(0)
    size, dim = unet.config.sample_size, unet.config.cross_attention_dim
    x0 = torch.randn(batch, unet.config.in_channels, size, size, generator=g)  # (B, 4, 16, 16)
    context = torch.randn(batch, 77, dim, generator=g)  # (B, 77, 384): MiniLM states, padded to 77
    alphas = torch.linspace(0.9999, 0.005, 1000)

    def step() -> None:
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        torch.nn.functional.mse_loss(unet(x_t, t, context).sample, noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rss_before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    step()  # warm-up: creates the optimizer state and oneDNN primitives (their memory counts in the peak)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                      if torch.is_tensor(v))
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    return {"mode": mode, "samples_per_s": batch * steps / seconds, "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in unet.parameters()),
            "trainable_bytes": param_bytes, "grad_bytes": param_bytes,  # one fp32 gradient per trainable weight
            "optimizer_state_bytes": state_bytes,
            "peak_rss_increase_mib": (peak - rss_before) / 1024 if reset else None,
            "rss_before_mib": rss_before / 1024}


def run_child(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--batch", str(args.batch),
           "--steps", str(args.steps), "--rank", str(args.rank), "--targets", args.targets,
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"the {mode} measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def training_table(args: argparse.Namespace) -> dict:
    rows: dict[str, list[dict]] = {m: [] for m in MODES}
    for repeat in range(args.repeats):
        for mode in (MODES if repeat % 2 == 0 else MODES[::-1]):
            rows[mode].append(run_child(mode, args))
            print(json.dumps(rows[mode][-1]), file=sys.stderr)
    full, lora = rows["full"], rows["lora"]
    speed = [b["samples_per_s"] / a["samples_per_s"] for a, b in zip(full, lora)]
    out = {"batch": args.batch, "timed_steps": args.steps, "rank": args.rank, "targets": args.targets,
           "threads": args.threads, "repeats": args.repeats}
    for mode in MODES:
        first = rows[mode][0]
        peaks = [r["peak_rss_increase_mib"] for r in rows[mode] if r["peak_rss_increase_mib"] is not None]
        out[mode] = {"samples_per_s": [round(r["samples_per_s"], 1) for r in rows[mode]],
                     "trainable_params": first["trainable_params"], "total_params": first["total_params"],
                     "trainable_mib": round(first["trainable_bytes"] / 2**20, 3),
                     "grad_mib": round(first["grad_bytes"] / 2**20, 3),
                     "optimizer_state_mib": round(first["optimizer_state_bytes"] / 2**20, 3),
                     "peak_rss_increase_mib": [round(p, 1) for p in peaks]}
    out["ratio_lora_over_full"] = {
        "samples_per_s": _spread(speed),
        "optimizer_state": round(lora[0]["optimizer_state_bytes"] / full[0]["optimizer_state_bytes"], 5),
        "peak_rss_increase": (_spread([b["peak_rss_increase_mib"] / a["peak_rss_increase_mib"]
                                       for a, b in zip(full, lora)])
                              if full[0]["peak_rss_increase_mib"] is not None else None),
    }
    return out


def apply_table(args: argparse.Namespace) -> dict:
    """benchmarks/lora_apply.py's interleaved base / unfused / fused timings, as images/s and ratios."""
    sys.path.insert(0, str(HERE))
    import lora_apply  # noqa: E402  (the same measurement, imported rather than copied)

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        lora_apply.main(["--rank", str(args.rank), "--steps", str(args.apply_steps),
                         "--repeats", str(args.apply_repeats), "--threads", str(args.threads)])
    raw = json.loads(buffer.getvalue())
    seconds = raw["seconds_per_image"]
    return {**raw, "images_per_s": {k: round(1 / v, 3) for k, v in seconds.items()},
            "images_per_s_ratio_to_base": {k: round(seconds["base"] / v, 3) for k, v in seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per measurement (after 1 warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--targets", default="attention", choices=("attention", "transformer", "locon"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--apply-steps", type=int, default=25, help="sampling steps per image in the apply benchmark")
    p.add_argument("--apply-repeats", type=int, default=3)
    p.add_argument("--no-apply", action="store_true", help="skip the generation-time measurement")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch", "steps", "repeats", "rank", "threads", "apply_steps", "apply_repeats"):
        if not 1 <= getattr(args, name) <= 10_000:
            p.error(f"--{name.replace('_', '-')} must be in 1..10000")
    if args.child:
        print(json.dumps(measure(args.child, batch=args.batch, steps=args.steps, rank=args.rank,
                                 targets=args.targets, threads=args.threads)))
        return 0
    result = {"training": training_table(args)}
    if not args.no_apply:
        result["generation"] = apply_table(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
