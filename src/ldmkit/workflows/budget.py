"""A multi-stage recipe's time budget: each training stage's deadline, and OUT/budget.json, the ledger of the
wall seconds every training stage has spent over every attempt (`ldmkit.workflows.stages.run_stages`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ldmkit.config.training import MAX_MINUTES
from ldmkit.errors import UsageError, shown

LEDGER = "budget.json"


def check_budget(minutes: object, path: Path) -> float | None:
    """A stages file's `budget_minutes` (the wall time of its training stages together), checked; None when absent."""
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                or not 0 < minutes <= MAX_MINUTES):
        raise UsageError(f"{path}: budget_minutes must be a number of minutes > 0 and <= {MAX_MINUTES:g}, got "
                         f"{shown(minutes)}")
    return minutes


def stage_deadline(stage, pending: list, minutes: float, spent: dict[str, float], log) -> float:
    """The time_budget.now() by which training stage `stage` must end: its share (against the shares of the
    training stages still to run, itself included) of what the budget has left after every training stage's
    attempts so far (`spent`, seconds by stage)."""
    from ldmkit.training import time_budget

    left = minutes * 60.0 - sum(spent.values())
    if left <= 0:
        raise UsageError(f"stage {stage.name}: the recipe's time budget ({minutes:g} min) is spent: its training "
                         f"stages took {sum(spent.values()) / 60:.1f} min; give more with --budget-minutes N "
                         "(0: no budget)")
    allotted = left * stage.share / sum(s.share for s in pending)
    log(f"stage {stage.name}: {allotted / 60:.1f} min of the {left / 60:.1f} min the budget ({minutes:g} min) has "
        "left (steps fitted to it)")
    return time_budget.now() + allotted


def read_ledger(out: Path) -> dict[str, float]:
    """OUT/budget.json's seconds by stage ({} when there is none); a file ldmkit did not write is refused."""
    path = out / LEDGER
    if not path.is_file():
        return {}
    try:
        spent = {str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["spent_s"].items()}
        if not all(0.0 <= v <= MAX_MINUTES * 60 for v in spent.values()):  # NaN fails too
            raise ValueError("seconds out of range")
        return spent
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{path} is not a budget ledger ldmkit wrote; it was left as it is: move it away to "
                         "run the recipe") from None


def write_ledger(out: Path, spent: dict[str, float]) -> None:
    """Replace OUT/budget.json atomically (a stop mid-write leaves the old one)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{LEDGER}.tmp"
    tmp.write_text(json.dumps({"spent_s": {k: round(v, 3) for k, v in spent.items()}}, indent=1), encoding="utf-8")
    os.replace(tmp, out / LEDGER)
