"""`ldmkit train unet|vae|clip|attributes|recipe|resume`: parsing and printing only (ldmkit.training does the work)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TRAINERS = {
    "unet": "text-conditional UNet on cached latents (from a preset or a model folder; with a `dreambooth:` "
            "section, full-fine-tune DreamBooth)",
    "vae": "AutoencoderKL: L1 + gradient + KL (+ optional patch GAN); measures the latent scaling factor",
    "clip": "contrastive dual encoder (ConvNet image tower + projected text encoder) for scoring/reranking",
    "attributes": "attribute classifier (one head per label column) that scores generated images in `ldmkit eval`",
    "lora": "LoRA adapters on a frozen UNet (kohya-format lora.safetensors in RUN/final)",
    "embedding": "textual inversion: new token vectors for a frozen model (RUN/final/<token>.safetensors)",
}
SHORTCUTS = (("data", "data.path"), ("image_size", "data.image_size"), ("steps", "train.steps"),
             ("batch_size", "train.batch_size"), ("seed", "train.seed"))


def register(subparsers) -> None:
    from ldmkit.cli.threads_option import add_threads_option

    train = subparsers.add_parser("train", help="train a VAE, UNet, CLIP dual encoder or attribute classifier; "
                                               "resume a run")
    sub = train.add_subparsers(dest="train_command", metavar="TRAINER")
    train.set_defaults(func=lambda args: (train.print_help(), 2)[1])
    for kind, text in TRAINERS.items():
        parser = sub.add_parser(kind, help=text)
        optional = kind == "attributes"  # its recipe's defaults are a complete recipe
        parser.add_argument("--config", type=Path, required=not optional,
                            help="YAML recipe (see configs/)" + ("; default: the recipe's defaults" if optional else ""))
        parser.add_argument("--out", type=Path, required=True,
                            help="run folder (checkpoints/, metrics.jsonl, final/); an existing run resumes")
        if kind == "attributes":
            _attribute_shortcuts(parser)
        _set_arg(parser)
        add_threads_option(parser)
        parser.set_defaults(func=run_train, trainer=kind)
    staged = sub.add_parser("recipe", help="run a multi-stage recipe (e.g. VAE then UNet then CLIP); resumable")
    staged.add_argument("stages_file", type=Path, help="YAML file with a `stages:` list")
    staged.add_argument("--out", type=Path, required=True, help="root folder: one run folder per stage")
    staged.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in EVERY stage's recipe (after the stage's own), e.g. --set "
                             "train.steps=2 for a smoke run (repeatable)")
    staged.add_argument("--budget-minutes", type=float, metavar="N",
                        help="wall-time budget of the training stages together (the file's budget_minutes "
                             "otherwise; 0: none): each stage's steps are fitted to its share of the time left")
    add_threads_option(staged)
    staged.set_defaults(func=run_recipe)
    resume = sub.add_parser("resume", help="resume the run in a run folder with its stored recipe")
    resume.add_argument("run_dir", type=Path, help="run folder written by `ldmkit train unet|vae|clip`")
    resume.add_argument("--restart", action="store_true",
                        help="start again from step 0 when no checkpoint verifies (its checkpoints and final/ "
                             "are kept, renamed *.unverified); without it such a run is refused")
    _set_arg(resume)
    add_threads_option(resume)
    resume.set_defaults(func=run_resume)


def _set_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.steps=200 (repeatable)")


def _attribute_shortcuts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="dataset folder (data.path); e.g. an avatars build")
    parser.add_argument("--image-size", type=int, help="input side in pixels (data.image_size; default 64)")
    parser.add_argument("--steps", type=int, help="optimizer steps (train.steps)")
    parser.add_argument("--batch-size", type=int, help="images per step (train.batch_size)")
    parser.add_argument("--seed", type=int, help="seed of initialisation and data order (train.seed)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="use only rows with this label, e.g. source=avatars (repeatable; attributes.where)")


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """`--steps 200` etc. as the dotted overrides they stand for (before any --set, which wins)."""
    from ldmkit.cli.eval import parse_where

    # JSON values are YAML too, and quoting keeps a folder named e.g. "123" or "yes" a string
    out = [f"{key}={json.dumps(getattr(args, name))}" for name, key in SHORTCUTS
           if getattr(args, name, None) is not None]
    where = parse_where(getattr(args, "where", []))
    if where:
        out.append(f"attributes.where={json.dumps(where)}")
    return out


def _report(result) -> int:
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`, one summary (process 0's)
        return 130 if result.interrupted else 0
    if result.final_dir is not None:  # `train clip`: the before/after retrieval table (RUN/clip_report.json)
        from ldmkit.training.clip_report import report_table

        table = report_table(result.run_dir)
        if table:
            print(table, file=sys.stderr)
    print(json.dumps({"run_dir": str(result.run_dir), "step": result.step, "resumed_from_step": result.resumed_from_step,
                      "interrupted": result.interrupted, "final": str(result.final_dir) if result.final_dir else None}))
    return 130 if result.interrupted else 0


def run_train(args: argparse.Namespace) -> int:
    from ldmkit.training.trainers import run_trainer

    return _report(run_trainer(args.trainer, args.config, args.out, shortcut_overrides(args) + args.overrides))


def run_resume(args: argparse.Namespace) -> int:
    from ldmkit.training.trainers import resume_run

    return _report(resume_run(args.run_dir, args.overrides, restart=args.restart))


def run_recipe(args: argparse.Namespace) -> int:
    from ldmkit.workflows.stages import run_stages

    done = run_stages(args.stages_file, args.out, overrides=args.overrides, budget_minutes=args.budget_minutes,
                      log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"out": str(args.out), "stages": dict(done)}))
    return 130 if done and done[-1][1] == "interrupted" else 0
