"""`ldmkit model init` (random weights from a preset), `model info` (what a model holds) and `model ship`
(a model folder or training run -> the fp16 folder shipped inside the package, issue 6).

Parsing and printing only; torch/diffusers are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError

PRESET_NAMES = ("tiny", "small64", "sd15", "sd21")  # ldmkit.models.presets.PRESETS, without importing it


def register(subparsers: Any) -> None:
    """Add `model init` and `model info` to the top-level parser."""
    model = subparsers.add_parser("model", help="create or inspect model folders")
    sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    model.set_defaults(func=lambda args: (model.print_help(), 2)[1])

    init = sub.add_parser("init", help="write a model folder with random weights from a preset")
    init.add_argument("out", type=Path, metavar="OUT", help="new (or empty) folder to write")
    init.add_argument("--preset", choices=PRESET_NAMES, default="small64", help="architecture (default: small64)")
    init.add_argument("--seed", type=int, default=0, help="seed for the random weights (default: 0)")
    init.add_argument(
        "--text-encoder",
        default=None,
        metavar="clip|minilm|DIR",
        help="text encoder: random 'clip', pretrained 'minilm', or a local folder (default: the preset's)",
    )
    init.add_argument("--latent-channels", type=int, metavar="C",
                      help="latent channels of the VAE and UNet (default: the preset's, 4)")
    init.set_defaults(func=run_init)

    info = sub.add_parser("info", help="describe a model folder or single-file checkpoint")
    info.add_argument("path", type=Path, metavar="PATH", help="model folder (or .safetensors with --single-file)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.bin/.pt weights (weights only)")
    info.add_argument(
        "--single-file", metavar="PRESET", choices=PRESET_NAMES, default=None,
        help="PATH is one original-layout SD checkpoint with this preset's architecture",
    )  # fmt: skip
    info.set_defaults(func=run_info)

    ship = sub.add_parser(
        "ship", help="copy a model (or a training run) into a package folder: fp16 weights, <= 60 MB",
        description="Write a model folder, or the finished stages of `ldmkit train recipe --out RUN`, as the "
                    "default model shipped inside the package: every weight as fp16 safetensors, the packaged "
                    "MiniLM text encoder by reference instead of a copy, and ldmkit.json recording the recipe, "
                    "dataset cards, metrics, source hash, size and a reference image hash for this platform.",
    )  # fmt: skip
    ship.add_argument("source", type=Path, metavar="RUN_OR_MODEL_FOLDER", help="model folder or multi-stage run folder")
    ship.add_argument("--out", type=Path, required=True, help="destination, e.g. src/ldmkit/default_model")
    ship.add_argument("--clip", type=Path, metavar="FOLDER", help="model folder holding clip/ (default: the source's)")
    ship.add_argument("--attributes", type=Path, metavar="FOLDER",
                      help="folder holding attributes/, the attribute classifier (default: the source's)")
    ship.add_argument("--recipe", type=Path, metavar="FILE", help="recipe file to record (e.g. configs/default.yaml)")
    ship.add_argument("--card", type=Path, nargs="+", default=[], metavar="FILE", help="dataset card file(s)")
    ship.add_argument("--metrics", type=Path, nargs="+", default=[], metavar="FILE", help="metrics JSON file(s)")
    ship.add_argument("--steps", type=int, help="default sampling steps of the shipped model")
    ship.add_argument("--sampler", help="default sampler of the shipped model")
    ship.add_argument("--guidance", type=float, help="default guidance scale of the shipped model")
    ship.add_argument("--name", default="", help="model name recorded in ldmkit.json and each PNG")
    ship.add_argument("--replace", action="store_true", help="replace an earlier ship in --out (never other folders)")
    ship.add_argument("--max-mb", type=float, default=60.0, help="refuse to ship more than this (default: 60 MB)")
    ship.add_argument("--no-reference", action="store_true",
                      help="skip generating the reference image whose PNG hash the tests compare against")
    ship.set_defaults(func=run_ship)


def run_init(args: argparse.Namespace) -> int:
    """Build random-init components and save them to a new folder."""
    from ldmkit.models import build_components, save_components

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; `model init` never overwrites files")
    components = build_components(args.preset, seed=args.seed, text_encoder=args.text_encoder,
                                  latent_channels=args.latent_channels)
    save_components(components, out)
    print(f"wrote {args.preset} model (seed {args.seed}, text encoder {components.text_encoder.kind}, "
          f"{components.latent_channels} latent channels) to {out}")
    return 0


def describe(path: Path, *, allow_pickle: bool = False, single_file: str | None = None) -> dict[str, Any]:
    """The facts `model info` prints, as a JSON-ready dict."""
    from ldmkit.models import load_components, load_single_file, model_hash

    if single_file:
        c = load_single_file(path, preset=single_file, allow_pickle=allow_pickle)
    else:
        c = load_components(path, allow_pickle=allow_pickle)

    def params(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    te = c.text_encoder
    return {
        "path": str(path),
        "hash": model_hash(path),
        "image_size": c.image_size,
        "latent_shape": list(c.latent_shape()),
        "vae_scale_factor": c.vae_scale_factor,
        "scaling_factor": c.scaling_factor,
        "parameters": {
            "unet": params(c.unet),
            "vae": params(c.vae),
            "text_encoder": params(te.model),
        },
        "unet": {
            "block_out_channels": list(c.unet.config.block_out_channels),
            "cross_attention_dim": c.unet.config.cross_attention_dim,
        },
        "text_encoder": {
            "kind": te.kind,
            "class": type(te.model).__name__,
            "hidden_size": te.hidden_size,
            "max_length": te.max_length,
        },
        "scheduler": c.scheduler_config,
        "meta": c.meta,
    }


def _print_text(info: dict[str, Any]) -> None:
    p = info["parameters"]
    te = info["text_encoder"]
    sched = info["scheduler"]
    lines = [
        f"model        {info['path']}  (hash {info['hash']})",
        f"image        {info['image_size']}x{info['image_size']} -> latent {tuple(info['latent_shape'])} "
        f"(factor {info['vae_scale_factor']}, scaling {info['scaling_factor']:g})",
        f"unet         {p['unet'] / 1e6:.2f}M params, channels {info['unet']['block_out_channels']}, "
        f"context {info['unet']['cross_attention_dim']}",
        f"vae          {p['vae'] / 1e6:.2f}M params",
        f"text encoder {te['kind']} ({te['class']}), {p['text_encoder'] / 1e6:.2f}M params, "
        f"{te['max_length']} tokens x {te['hidden_size']}",
        f"scheduler    {sched['_class_name']}, {sched.get('num_train_timesteps')} steps, "
        f"{sched.get('beta_schedule')}, prediction {sched.get('prediction_type', 'epsilon')}",
    ]
    if info["meta"]:
        lines.append(f"ldmkit.json  {json.dumps(info['meta'], sort_keys=True)}")
    print("\n".join(lines))


def run_info(args: argparse.Namespace) -> int:
    """Load a model (safety-checked) and print its components."""
    info = describe(Path(args.path), allow_pickle=args.allow_pickle, single_file=args.single_file)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
    else:
        _print_text(info)
    return 0


def run_ship(args: argparse.Namespace) -> int:
    """Ship a model folder or run into --out; prints each file's size and the total."""
    from ldmkit.models.shipping import ShipSpec, ship_model

    sampling = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("guidance", args.guidance))
                if v is not None}
    if args.sampler is not None:
        from ldmkit.diffusion.registry import get_sampler

        get_sampler(args.sampler)  # an unknown name fails before any work
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UsageError(f"--steps must be in 1..1000, got {args.steps}")
    spec = ShipSpec(source=args.source, out=args.out, clip=args.clip, attributes=args.attributes, recipe=args.recipe,
                    cards=tuple(args.card), metrics=tuple(args.metrics), sampling=sampling, name=args.name,
                    replace=args.replace, max_bytes=int(args.max_mb * 1_000_000))
    reference = None
    if not args.no_reference:
        from ldmkit.cli.generate import reference_png_sha256

        def reference(folder: Path, info: dict[str, Any]) -> str:
            return reference_png_sha256(folder, info["prompt"], info["seed"])

    report = ship_model(spec, reference=reference, log=print)
    for name, size in report.files.items():
        print(f"{size / 1e6:9.3f} MB  {name}")
    print(f"shipped {report.total_bytes / 1e6:.1f} MB (limit {args.max_mb:g} MB) to {report.out}: source hash "
          f"{report.source_hash}, text encoder {report.text_encoder}")
    return 0
