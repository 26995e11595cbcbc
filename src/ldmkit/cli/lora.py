"""`ldmkit lora inspect FILE` (format, ranks, alphas, targets, metadata) and `ldmkit lora merge A:0.7 B:0.4 --out C`
(one file equal to applying A and B with those scales: ranks concatenated, exact; issue 16) and `ldmkit lora fuse
MODEL A:0.7 --out NEW` (a new model folder with them in its weights).

Parsing and printing only; torch and safetensors are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError

MAX_MERGE_INPUTS = 64


def register(subparsers: Any) -> None:
    """Add `lora inspect`, `lora merge` and `lora fuse` to the top-level parser."""
    lora = subparsers.add_parser("lora", help="inspect or merge LoRA files (kohya, PEFT, diffusers layouts)")
    sub = lora.add_subparsers(dest="lora_command", metavar="ACTION")
    lora.set_defaults(func=lambda args: (lora.print_help(), 2)[1])

    inspect = sub.add_parser("inspect", help="format, layers, ranks, alphas, targets and metadata of a LoRA file")
    inspect.add_argument("file", type=Path, metavar="FILE", help="a LoRA .safetensors file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.set_defaults(func=run_inspect)

    merge = sub.add_parser(
        "merge", help="merge LoRA files into one, exactly (ranks concatenated, scales folded in)",
        description="Write one LoRA file equal to applying every FILE at its SCALE together: per module the "
                    "ranks are concatenated, so nothing is approximated (the merged rank is the sum).",
    )  # fmt: skip
    merge.add_argument("inputs", nargs="+", metavar="FILE[:SCALE]", help="input files, each with a scale (default 1)")
    merge.add_argument("--out", type=Path, required=True, help="the .safetensors file to write (never overwritten)")
    merge.add_argument("--format", choices=("kohya", "peft"), default="kohya",
                       help="kohya (A1111/ComfyUI/diffusers read it; default) or peft (diffusers' own layout)")
    merge.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="weight precision (default fp16)")
    merge.add_argument("--model", type=Path, default=None, metavar="DIR",
                       help="check every layer against this model folder (needed for --format peft from kohya files)")
    merge.set_defaults(func=run_merge)

    fuse = sub.add_parser(
        "fuse", help="a new model folder with LoRA files fused into its weights",
        description="Write a new model folder: MODEL with every FILE fused into its UNet / text encoder weights at "
                    "its SCALE (W += scale x alpha / rank x up @ down), as `generate --lora` applies them, so "
                    "`ldmkit eval`, `ldmkit serve` and diffusers use the result like any model folder.",
    )  # fmt: skip
    fuse.add_argument("model", type=Path, metavar="MODEL", help="model folder (diffusers layout)")
    fuse.add_argument("inputs", nargs="+", metavar="FILE[:SCALE]", help="LoRA files, each with a scale (default 1)")
    fuse.add_argument("--out", type=Path, required=True, help="new folder to write (never an existing path)")
    fuse.set_defaults(func=run_fuse)


def run_inspect(args: argparse.Namespace) -> int:
    from ldmkit.models.lora_files import describe, read_lora

    lora = read_lora(args.file)
    info = describe(lora)
    if args.json:
        print(json.dumps({**info, "warnings": lora.warnings}, indent=2, sort_keys=True))
        return 0
    for w in lora.warnings:
        print(f"ldmkit: warning: {w}")
    parts = ", ".join(f"{p} {n}" for p, n in info["parts"].items())
    print(f"{args.file}: {info['format']} LoRA, {info['layers']} layers ({parts}), {info['parameters']:,} parameters")
    print(f"  rank {_values(info['ranks'])}, alpha {_values(info['alphas'])}; {info['conv_kxk_layers']} kxk conv layers")
    print("  targets: " + ", ".join(f"{k} x{n}" for k, n in info["targets"].items()))
    for key, value in sorted(info["metadata"].items()):
        text = value if len(value) <= 100 else value[:97] + "..."
        print(f"  {key}: {text}")
    return 0


def _values(values: list) -> str:
    shown = [f"{v:g}" for v in values[:8]]
    return "/".join(shown) + (f" (+{len(values) - 8} more)" if len(values) > 8 else "")


def run_merge(args: argparse.Namespace) -> int:
    from ldmkit.models.lora_files import parse_lora_arg, read_lora, resolve
    from ldmkit.models.lora_write import lora_metadata, merge_loras, save_lora

    if len(args.inputs) > MAX_MERGE_INPUTS:
        raise UsageError(f"at most {MAX_MERGE_INPUTS} files can be merged at once")
    if args.out.exists():
        raise UsageError(f"{args.out} exists; not overwriting it")
    if args.out.suffix != ".safetensors":
        raise UsageError(f"{args.out}: the merged file must be .safetensors")
    specs = [parse_lora_arg(text) for text in args.inputs]
    files = [(read_lora(path), scale) for path, scale in specs]
    for lora, _ in files:
        for w in lora.warnings:
            print(f"ldmkit: warning: {w}")
    if args.format == "peft" and args.model is None and any(lora.format == "kohya" for lora, _ in files):
        raise UsageError("--format peft from kohya files needs --model DIR: kohya names lose the module path's dots")
    layers = merge_loras(files)
    if args.model is not None:
        from ldmkit.models.folder import load_components
        from ldmkit.models.lora_files import LoraFile

        c = load_components(args.model)
        layers = resolve(LoraFile(layers, source="merged"), {"unet": c.unet, "text_encoder": c.text_encoder.model})
    import torch

    ranks = sorted({layer.rank for layer in layers.values()})
    meta = lora_metadata(rank=ranks[-1], alpha=ranks[-1], extra={
        "ldmkit_merged_from": json.dumps([[str(p), s] for p, s in specs])})
    save_lora(layers, args.out, fmt=args.format, metadata=meta,
              dtype=torch.float16 if args.dtype == "fp16" else torch.float32)
    print(f"wrote {args.out}: {len(layers)} layers, rank {_values(ranks)} (sum of the inputs' ranks per module)")
    return 0


def run_fuse(args: argparse.Namespace) -> int:
    """`lora fuse`: MODEL + LoRA files -> a new model folder with them in its weights."""
    from ldmkit.pipeline.lora_fuse import fuse_into_folder

    record = fuse_into_folder(args.model, lora_specs(args.inputs), args.out)
    for w in record["warnings"]:
        print(f"ldmkit: warning: {w}")
    layers = ", ".join(f"{part} {n}" for part, n in record["layers"].items())
    dropped = f"; not copied: {', '.join(record['dropped'])}" if record["dropped"] else ""
    print(f"wrote {args.out}: {args.model} with {len(record['loras'])} LoRA file(s) fused ({layers} weights){dropped}")
    return 0


def lora_specs(texts: list[str]) -> list[tuple[Path, float]]:
    """`--lora FILE[:SCALE]` values -> (path, scale), each file checked (exists, .safetensors, size) before any
    model loads."""
    from ldmkit.models.lora_files import check_lora_path, parse_lora_arg

    if len(texts) > MAX_MERGE_INPUTS:
        raise UsageError(f"at most {MAX_MERGE_INPUTS} --lora files")
    specs = [parse_lora_arg(text) for text in texts]
    return [(check_lora_path(path), scale) for path, scale in specs]
