"""The record every run folder keeps: resolved config (config.yaml), run.json (seed, versions, git, processes).

On resume the stored config is compared with the new one: settings that define the run's
trajectory (seed, batch size, accumulation, precision, process count) must match; the rest (steps,
lr, logging, checkpoint cadence) may change and the change is recorded.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from ldmkit.config.recipe import dump_yaml, from_dict, read_yaml_mapping, to_dict
from ldmkit.config.training import TrainConfig
from ldmkit.errors import UsageError, shown
from ldmkit.training.checkpoint_files import read_json, write_json

CONFIG = "config.yaml"
TRAIN_CONFIG = "train_config.yaml"
RUN_INFO = "run.json"
MUST_MATCH = ("seed", "batch_size", "grad_accum", "mixed_precision")
PACKAGES = ("ldmkit", "torch", "accelerate", "diffusers", "transformers", "safetensors", "numpy", "Pillow")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["ldmkit"] is None:  # imported from a source tree that is not installed
        import ldmkit

        versions["ldmkit"] = ldmkit.__version__
    return versions


def git_commit() -> str | None:
    """Commit of the git checkout ldmkit is imported from ("+dirty" when modified), or None."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_resumable(run_dir: Path, cfg: TrainConfig, num_processes: int) -> None:
    """Refuse to resume when a trajectory-defining setting differs from the stored run."""
    stored_path = run_dir / TRAIN_CONFIG
    if not stored_path.is_file():
        return
    stored = from_dict(TrainConfig, read_yaml_mapping(stored_path), source=str(stored_path))
    info = read_json(run_dir / RUN_INFO) if (run_dir / RUN_INFO).is_file() else {}
    pairs = [(name, getattr(stored, name), getattr(cfg, name)) for name in MUST_MATCH]
    pairs.append(("processes", info.get("num_processes", num_processes), num_processes))
    for name, before, now in pairs:
        if before != now:
            raise UsageError(
                f"cannot resume {run_dir}: it was trained with {name}={shown(before)}, now {name}={shown(now)}; "
                f"use the same {name} or a new run folder"
            )


def record_run(run_dir: Path, cfg: TrainConfig, recipe: Any, *, num_processes: int, resumed_from: int | None) -> None:
    """Write config.yaml, train_config.yaml and run.json (appending this start to its history)."""
    (run_dir / TRAIN_CONFIG).write_text(dump_yaml(cfg), encoding="utf-8")
    (run_dir / CONFIG).write_text(dump_yaml(recipe if recipe is not None else cfg), encoding="utf-8")
    info = read_json(run_dir / RUN_INFO) if (run_dir / RUN_INFO).is_file() else {}
    start = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "resumed_from_step": resumed_from,
        "steps": cfg.steps,
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    info.update(
        seed=cfg.seed,
        num_processes=num_processes,
        effective_batch=cfg.batch_size * num_processes * cfg.grad_accum,
        train_config=to_dict(cfg),
        starts=info.get("starts", []) + [start],
    )
    write_json(run_dir / RUN_INFO, info)
