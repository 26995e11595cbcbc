"""`ldmkit eval MODEL --data DIR -o OUT`: parse, call `ldmkit.evaluation.run.evaluate`, print where it wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from ldmkit.cli.threads_option import add_threads_option
from ldmkit.errors import UsageError
from ldmkit.evaluation.framing import FITS
from ldmkit.evaluation.free_prompts import PROMPT_SETS


def register(sub) -> None:
    p = sub.add_parser("eval", help="generate for held-out captions and measure (metrics.json + report.html)",
                       description="Generate images for a dataset split's captions with fixed seeds and measure "
                                   "them (CLIP score, prompt retrieval, FD/KID/CMMD, shapes attribute accuracy), "
                                   "each with a bootstrap 95% interval and the real images as reference.")
    p.add_argument("model", type=Path, help="model folder (diffusers layout; its clip/ scores the images)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder holding the held-out split")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to use (default test)")
    p.add_argument("--n", type=int, default=32, help="captions (first N images of the split; default 32)")
    p.add_argument("--sample-seed", type=int, metavar="S",
                   help="take the N images at random (seed S) instead of the first N, e.g. emoji of every group "
                        "rather than the start of the alphabet")
    p.add_argument("--seeds", default="0", metavar="S1,S2", help="generation seeds, one image per seed (default 0)")
    p.add_argument("--seed-per-image", action="store_true",
                   help="give caption i's image of seed S the seed S*N+i (independent noise per image, as FD/KID/CMMD "
                        "assume) instead of seed S for every caption (one shared noise draw; the default)")
    p.add_argument("--sweep", metavar="NAME=V1,V2", help="vary guidance, steps or sampler, e.g. guidance=1,3,5,7")
    p.add_argument("--clip", type=Path, metavar="FOLDER",
                   help="dual encoder to score (and --best-of rerank) with: a folder holding clip/, a `train clip` "
                        "run, or a transformers CLIPModel folder (default: MODEL/clip)")
    p.add_argument("--steps", type=int, help="sampling steps (default from the model)")
    p.add_argument("--sampler", help="sampler name (default from the model)")
    p.add_argument("--guidance", type=float, help="guidance scale (default from the model)")
    p.add_argument("--guidance-rescale", type=float, metavar="PHI",
                   help="guidance rescale in [0, 1] (Lin et al. 2023; default from the model)")
    p.add_argument("--karras", action="store_true",
                   help="Karras et al. 2022 sigma spacing (samplers that walk interpolated sigmas; see ldmkit samplers)")
    p.add_argument("--best-of", type=int, default=1, metavar="K", help="also measure best-of-K reranking")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="evaluate only rows with this label, e.g. source=avatars (repeatable)")
    p.add_argument("--attributes", type=Path, metavar="FOLDER",
                   help="attribute classifier for avatars rows (default: MODEL/attributes; `ldmkit train attributes`)")
    p.add_argument("--prompt-set", default="captions", choices=PROMPT_SETS,
                   help="captions: each image's first caption (default); free-avatars: free phrasings of the split's "
                        "avatars (1-4 attributes, synonyms, other word orders), scored on the named attributes; "
                        "free-avatars-templates: training-style captions scored on the same attributes; "
                        "free-avatars-new-words (+ -templates): hair and clothing colour words no caption option "
                        "teaches")
    p.add_argument("--fit", choices=FITS,
                   help="frame the real images with this fit instead of the model's recorded training framing "
                        "(data.trim.fit; stretch: a plain resize, the references before 2026-12-03)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per interval (default 1000)")
    p.add_argument("--batch", type=int, default=16,
                   help="images sampled together (default 16; changes images only by float rounding)")
    p.add_argument("-o", "--out", type=Path, required=True, help="new or empty output folder")
    add_threads_option(p)
    p.set_defaults(func=run_eval)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers such as 0,1,2") from None


def parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise UsageError(f"--where {item!r}: expected COLUMN=VALUE, e.g. source=avatars")
        where[column.strip()] = value.strip()
    return where


def run_eval(args: argparse.Namespace) -> int:
    from ldmkit.evaluation.run import EvalSettings, evaluate, parse_sweep
    from ldmkit.evaluation.report import REPORT_FILE, fmt

    settings = EvalSettings(model=args.model, data=args.data, out=args.out, split=args.split, n=args.n,
                            sample_seed=args.sample_seed,
                            seeds=parse_seeds(args.seeds), seed_per_image=args.seed_per_image,
                            sweep=parse_sweep(args.sweep) if args.sweep else None,
                            clip=args.clip, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                            guidance_rescale=args.guidance_rescale, karras=args.karras,
                            best_of=args.best_of, n_boot=args.n_boot, where=parse_where(args.where),
                            attributes=args.attributes, batch=args.batch, prompt_set=args.prompt_set, fit=args.fit)
    if not settings.model.exists():
        raise UsageError(f"model folder {settings.model} does not exist")
    metrics = evaluate(settings)
    for note in metrics["notes"]:
        print(f"note: {note}")
    for condition in metrics["conditions"]:
        shown = {k: fmt(v) for k, v in condition["metrics"].items() if isinstance(v, dict) and "estimate" in v}
        avatars = condition["metrics"].get("avatars", {})
        for part in ("all", "seen", "unseen"):
            if avatars.get(part):
                shown[f"avatars attribute accuracy ({part})"] = fmt(avatars[part]["mean"])
        print(condition["label"] + ": " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    print(args.out / "metrics.json")
    print(args.out / REPORT_FILE)
    return 0
