"""The trainers by name: a table {name: Task class} and one runner that starts or resumes any of them.

    result = train_task("clip", recipe, "runs/clip")                          # a typed recipe
    result = run_trainer("unet", "configs/tiny.yaml", "runs/tiny", ["train.steps=50"])   # a recipe file
    result = resume_run("runs/tiny")     # reads RUN_DIR/trainer.json and RUN_DIR/config.yaml

Every Task is built as `Task(recipe, run_dir)` and trained by the shared loop (ldmkit.training.loop); the
table names classes as "module:Class" (as the sampler table names functions) so torch loads only when a
trainer runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from ldmkit.errors import UsageError, shown
from ldmkit.training.recipes import RECIPES, TRAINERS
from ldmkit.training.run_marker import MARKER, mark_run, trainer_of

__all__ = ["MARKER", "TASKS", "mark_run", "resume_run", "run_trainer", "task_class", "train_task", "trainer_of"]

RECIPE_FILE = "config.yaml"  # written by the loop's record_run: the resolved recipe
TASKS = {
    "unet": "ldmkit.training.unet:UNetTask",
    "vae": "ldmkit.training.vae:VAETask",
    "clip": "ldmkit.training.clip_task:ClipTask",
    "attributes": "ldmkit.training.attributes_task:AttributesTask",
    "lora": "ldmkit.training.lora_task:LoraTask",
    "embedding": "ldmkit.training.embedding_task:EmbeddingTask",
}
"""Trainer name -> its TrainTask class, built as Task(recipe, run_dir)."""


def task_class(kind: str):
    """The TrainTask class of trainer `kind` (imported now)."""
    if kind not in TASKS:
        raise UsageError(f"unknown trainer {shown(kind)}; known trainers: {', '.join(TRAINERS)}")
    module, name = TASKS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def train_task(kind: str, recipe, run_dir: str | Path, *, deadline: float | None = None):
    """Train (or resume) trainer `kind` with its typed `recipe` in `run_dir`; returns the loop's TrainResult.
    `deadline` (ldmkit.training.time_budget.now() seconds) fits the step count to the time left."""
    from ldmkit.training.loop import train
    from ldmkit.training.processes import main_process_first

    task = task_class(kind)
    if not isinstance(recipe, RECIPES[kind]):
        raise UsageError(f"trainer {kind} takes a {RECIPES[kind].__name__}, got {type(recipe).__name__}")
    run_dir = Path(run_dir)
    with main_process_first():  # process 0 builds the dataset (and cache) once; the others open it
        mark_run(run_dir, kind)
        built = task(recipe, run_dir)
    return train(built, recipe.train, run_dir, recipe=recipe, deadline=deadline)


def run_trainer(kind: str, config: str | Path | None, run_dir: str | Path, overrides: Sequence[str] = (), *,
                deadline: float | None = None):
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
    return train_task(kind, recipe, Path(run_dir), deadline=deadline)


def resume_run(run_dir: str | Path, overrides: Sequence[str] = (), *, restart: bool = False,
               deadline: float | None = None):
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
    return run_trainer(kind, run_dir / RECIPE_FILE, run_dir, overrides, deadline=deadline)
