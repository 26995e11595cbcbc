"""`ldmkit model init` (random weights from a preset), `model info` (what a model holds), `model ship`
(a model folder or training run -> the fp16 folder shipped inside the package, issue 6), `model convert`,
`model compose` (another text encoder) and `model merge` (a weighted sum of two models' weights).

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
    """Add `model init`, `info`, `convert`, `ship`, `compose` and `merge` to the top-level parser."""
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
    info.add_argument("path", type=Path, metavar="PATH", help="model folder, or one SD checkpoint file (.safetensors)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.bin/.pt weights (weights only)")
    info.add_argument(
        "--preset", "--single-file", dest="single_file", metavar="PRESET", choices=PRESET_NAMES, default=None,
        help="architecture of a single-file checkpoint PATH (default: inferred from its shapes)",
    )  # fmt: skip
    info.set_defaults(func=run_info)

    convert = sub.add_parser(
        "convert", help="write a diffusers model folder from an SD checkpoint file or a folder of .bin weights",
        description="Convert one original-layout (CompVis) Stable Diffusion checkpoint, or a diffusers folder "
                    "whose weights are pickles, into a new model folder with safetensors weights that ldmkit "
                    "and diffusers' StableDiffusionPipeline both load.",
    )  # fmt: skip
    convert.add_argument("source", type=Path, metavar="FILE_OR_FOLDER", help="checkpoint file or model folder")
    convert.add_argument("--out", type=Path, required=True, help="new folder to write (never an existing path)")
    convert.add_argument("--preset", choices=PRESET_NAMES, default=None,
                         help="architecture of a single-file checkpoint (default: inferred from its shapes)")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="allow .ckpt/.bin/.pt weights (read with torch.load(weights_only=True) only)")
    convert.set_defaults(func=run_convert)

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
    ship.add_argument("--card", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                      help="dataset card file(s); a repeated --card adds to the list")
    ship.add_argument("--metrics", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                      help="metrics JSON file(s); a repeated --metrics adds to the list")
    ship.add_argument("--steps", type=int, help="default sampling steps of the shipped model")
    ship.add_argument("--sampler", help="default sampler of the shipped model")
    ship.add_argument("--guidance", type=float, help="default guidance scale of the shipped model")
    ship.add_argument("--name", default="", help="model name recorded in ldmkit.json and each PNG")
    ship.add_argument("--replace", action="store_true", help="replace an earlier ship in --out (never other folders)")
    ship.add_argument("--max-mb", type=float, default=60.0, help="refuse to ship more than this (default: 60 MB)")
    ship.add_argument("--no-reference", action="store_true",
                      help="skip generating the reference image whose PNG hash the tests compare against")
    ship.set_defaults(func=run_ship)

    compose = sub.add_parser(
        "compose", help="a new model folder: one folder's UNet, VAE and scheduler with another text encoder",
        description="Write a new model folder made of --from's UNet, VAE, scheduler (copied as they are) and the text "
                    "encoder + tokenizer of --text-encoder: a CLIPModel or CLIPTextModel folder, a model folder, or "
                    "a `train clip` run (its fine-tuned text tower). Its hidden size must equal the UNet's "
                    "cross_attention_dim. ldmkit.json records where each part came from.",
    )  # fmt: skip
    compose.add_argument("--from", dest="base", type=Path, required=True, metavar="SD_FOLDER",
                         help="model folder (diffusers layout) whose UNet, VAE and scheduler are kept")
    compose.add_argument("--text-encoder", dest="text_source", type=Path, required=True, metavar="FOLDER",
                         help="CLIPModel / CLIPTextModel folder, model folder, or `train clip` run folder")
    compose.add_argument("--out", type=Path, required=True, help="new folder to write (never an existing path)")
    compose.set_defaults(func=run_compose)

    merge = sub.add_parser(
        "merge", help="a new model folder whose UNet (or other parts) is a weighted sum of two models'",
        description="Write a new model folder: a copy of A whose --parts hold (1 - alpha) x A + alpha x B, tensor by "
                    "tensor (a checkpoint merger; with B fine-tuned from A, a weight-space ensemble that keeps more of "
                    "A's behaviour as alpha falls). Both must have one architecture for each merged part.",
    )  # fmt: skip
    merge.add_argument("a", type=Path, metavar="A", help="model folder; OUT is a copy of it with the parts merged")
    merge.add_argument("b", type=Path, metavar="B", help="model folder of the same architecture")
    merge.add_argument("--alpha", type=float, required=True, help="weight of B, strictly between 0 and 1")
    merge.add_argument("--parts", default="unet", metavar="P[,P]",
                       help="comma-separated parts to merge: unet, vae, text_encoder (default: unet)")
    merge.add_argument("--out", type=Path, required=True, help="new folder to write (never an existing path)")
    merge.set_defaults(func=run_merge)


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
    from ldmkit.models import load_components, model_hash

    c = load_components(path, allow_pickle=allow_pickle, preset=single_file)  # a file: single-file checkpoint

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
        "classes": _trained_classes(c.meta),
        "meta": c.meta,
    }


def _trained_classes(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """ldmkit.json's dataset.classes ({class, prompt, images} per class folder trained on); [] if none."""
    dataset = meta.get("dataset") if isinstance(meta, dict) else None
    classes = dataset.get("classes") if isinstance(dataset, dict) else None
    return [k for k in classes if isinstance(k, dict) and {"class", "prompt", "images"} <= set(k)] \
        if isinstance(classes, list) else []


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
    if info["classes"]:  # the prompt to type for each class the model was trained on
        lines.append(f"classes      {len(info['classes'])}: " + "; ".join(
            f"{k['class']} -> \"{k['prompt']}\" ({k['images']} images)" for k in info["classes"]))
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


def run_convert(args: argparse.Namespace) -> int:
    """Checkpoint file or pickle-weights folder -> a new safetensors model folder."""
    from ldmkit.models.folder import convert_to_folder

    c = convert_to_folder(args.source, args.out, preset=args.preset, allow_pickle=args.allow_pickle)
    print(f"wrote {args.out} from {args.source} (architecture {c.meta.get('preset', 'from its configs')}, "
          f"scheduler {c.scheduler_config['_class_name']})")
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
        from ldmkit.pipeline.reference import reference_png_sha256

        def reference(folder: Path, info: dict[str, Any]) -> str:
            return reference_png_sha256(folder, info["prompt"], info["seed"])

    report = ship_model(spec, reference=reference, log=print)
    for name, size in report.files.items():
        print(f"{size / 1e6:9.3f} MB  {name}")
    print(f"shipped {report.total_bytes / 1e6:.1f} MB (limit {args.max_mb:g} MB) to {report.out}: source hash "
          f"{report.source_hash}, text encoder {report.text_encoder}")
    return 0


def run_compose(args: argparse.Namespace) -> int:
    """`model compose`: swap a model folder's text encoder + tokenizer into a new folder."""
    from ldmkit.models.compose import compose_text_encoder

    report = compose_text_encoder(args.base, args.text_source, args.out)
    dropped = f"; not copied: {', '.join(d + '/' for d in report.dropped)} (it read the replaced text encoder)" \
        if report.dropped else ""
    print(f"wrote {report.out}: UNet, VAE and scheduler of {args.base}, text encoder + tokenizer from "
          f"{report.source} (hidden size {report.hidden_size}){dropped}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """`model merge`: (1 - alpha) x A + alpha x B for the named parts, into a new folder."""
    from ldmkit.models.merge import describe_report, merge_models

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    report = merge_models(args.a, args.b, args.out, alpha=args.alpha, parts=parts)
    print(describe_report(report, args.alpha, args.a, args.b))
    return 0
