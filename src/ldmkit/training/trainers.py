"""Which trainer a run folder belongs to, and starting or resuming any of the three by name.

    result = run_trainer("unet", "configs/tiny.yaml", "runs/tiny", ["train.steps=50"])
    result = resume_run("runs/tiny")     # reads RUN_DIR/trainer.json and RUN_DIR/config.yaml
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ldmkit.config.recipe import load_recipe
from ldmkit.errors import UsageError, shown
from ldmkit.training.recipes import RECIPES, TRAINERS

MARKER = "trainer.json"
RECIPE_FILE = "config.yaml"  # written by the loop's record_run: the resolved recipe


def trainer_of(run_dir: Path) -> str | None:
    """The trainer recorded in `run_dir`, or None when it holds no run."""
    marker = Path(run_dir) / MARKER
    if not marker.is_file():
        return None
    try:
        kind = json.loads(marker.read_text(encoding="utf-8"))["trainer"]
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{marker} is not a trainer record ({err}); it should hold {{\"trainer\": \"unet\"}}") from None
    if kind not in TRAINERS:
        raise UsageError(f"{marker} names trainer {shown(kind)}; known trainers: {', '.join(TRAINERS)}")
    return kind


def mark_run(run_dir: Path, kind: str) -> None:
    """Record `kind` in `run_dir`; refuse a folder that holds another trainer's run."""
    existing = trainer_of(run_dir)
    if existing is not None and existing != kind:
        raise UsageError(f"{run_dir} holds a `{existing}` run; `train {kind}` needs a new --out folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MARKER).write_text(json.dumps({"trainer": kind}) + "\n", encoding="utf-8")


def _train_function(kind: str):
    if kind == "unet":
        from ldmkit.training.unet import train_unet

        return train_unet
    if kind == "vae":
        from ldmkit.training.vae import train_vae

        return train_vae
    if kind == "clip":
        from ldmkit.training.clip_task import train_clip

        return train_clip
    if kind == "attributes":
        from ldmkit.training.attributes_task import train_attributes

        return train_attributes
    raise UsageError(f"unknown trainer {shown(kind)}; known trainers: {', '.join(TRAINERS)}")


def run_trainer(kind: str, config: str | Path | None, run_dir: str | Path, overrides: Sequence[str] = ()):
    """Train `kind` with the recipe file `config` (None: the recipe's defaults) plus dotted overrides in `run_dir`."""
    if kind not in RECIPES:
        raise UsageError(f"unknown trainer {shown(kind)}; known trainers: {', '.join(TRAINERS)}")
    from ldmkit.config.recipe import apply_overrides, from_dict, read_yaml_mapping, to_dict
    from ldmkit.training.checkpoint import refuse_unverifiable
    from ldmkit.training.run_data import data_source_overrides

    refuse_unverifiable(Path(run_dir))  # before any work: a run whose checkpoints all fail is never restarted
    if config is None:  # overrides of one key keep the recipe's defaults of the others
        base, source = to_dict(RECIPES[kind]()), f"the {kind} recipe's defaults"
    else:
        base, source = read_yaml_mapping(Path(config)), str(config)
    base = data_source_overrides(base, overrides)  # --set data.path=DIR replaces the recipe's data.builtin
    recipe = from_dict(RECIPES[kind], apply_overrides(RECIPES[kind], base, overrides), source=source)
    return _train_function(kind)(recipe, Path(run_dir))


def resume_run(run_dir: str | Path, overrides: Sequence[str] = (), *, restart: bool = False):
    """Resume the run in `run_dir` with its stored recipe (overrides such as train.steps=N may extend it).

    The newest checkpoint whose SHA-256 hashes verify is used; when checkpoints exist but none verifies,
    the run is refused unless `restart` (its checkpoints and final/ are then set aside, never deleted)."""
    run_dir = Path(run_dir)
    kind = trainer_of(run_dir)
    if kind is None:
        raise UsageError(f"{run_dir} holds no training run ({MARKER} is missing); start one with "
                         "`ldmkit train unet|vae|clip|attributes`")
    if not (run_dir / RECIPE_FILE).is_file():
        raise UsageError(f"{run_dir / RECIPE_FILE} is missing: the run never started, start it again")
    if restart:
        from ldmkit.training.checkpoint import restart_run

        restart_run(run_dir)
    return run_trainer(kind, run_dir / RECIPE_FILE, run_dir, overrides)
