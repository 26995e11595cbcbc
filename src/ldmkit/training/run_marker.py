"""Which trainer a run folder belongs to: RUN_DIR/trainer.json, written before the first step."""

from __future__ import annotations

import json
from pathlib import Path

from ldmkit.errors import UsageError, shown
from ldmkit.training.recipes import TRAINERS

MARKER = "trainer.json"


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
