"""A wall-time budget for the training loop: the run's step count is fitted to the time it has left.

    budget = TimeBudget(deadline=time.monotonic() + 3600, cap=cfg.steps, validate_every=500,
                        checkpoint_every=500)

`train.max_minutes` (the loop's wall time, summed over resumes as metrics.jsonl's `elapsed_s`) and a
recipe's `budget_minutes` (a deadline for each training stage) both end up here. After CALIBRATION_STEPS
timed steps the loop asks `fit(step)`: the steps that still fit before the deadline at the measured rate,
with the measured cost of validations and checkpoints spread over the steps between them, capped by
`train.steps`. The loop fits again after every validation and checkpoint (costs and rate now known
better) and runs its learning-rate schedule to the fitted total, so a cosine decay still ends at its floor
when the budget binds. The fitted total is stored in every checkpoint, so a resumed run keeps its schedule
until its own first fit. Past the deadline the loop stops at once and saves the final model. A run the budget
ended before `train.steps` is validated at its last step too (when it validates at all).

How many steps a budgeted run gets depends on the machine's speed: the exact-resume guarantee holds for a
given fitted total, not across machines or loads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

CALIBRATION_STEPS = 20
"""Timed steps (after UNTIMED_STEPS) before the first fit."""
UNTIMED_STEPS = 3
"""Steps of each attempt not timed: the first steps pay for allocator warm-up and lazy initialisation."""


def now() -> float:
    """The clock every budget reads (monotonic seconds); tests replace it."""
    return time.monotonic()


@dataclass
class TimeBudget:
    """The deadline of one attempt of a run and what has been measured towards fitting it."""

    deadline: float
    """`now()` value by which the loop must have saved its final model."""
    cap: int
    """train.steps: the fitted total never exceeds it."""
    validate_every: int = 0
    checkpoint_every: int = 0
    timed_from: tuple[int, float] | None = None
    """(step, time) where step timing began in this attempt."""
    overhead_s: float = 0.0
    """Seconds spent in validations and checkpoints since timing began (not step time)."""
    validation_s: float | None = None
    checkpoint_s: float | None = None
    fits: int = 0

    def step_done(self, step: int, first_step: int) -> None:
        """Call after optimizer step `step`; `first_step` is the step this attempt started from."""
        if self.timed_from is None and step - first_step >= UNTIMED_STEPS:
            self.timed_from = (step, now())

    def overhead(self, kind: str, seconds: float) -> None:
        """A validation or checkpoint took `seconds`; later fits spread its cost over the steps between them."""
        if self.timed_from is not None:
            self.overhead_s += seconds
        if kind == "validation":
            self.validation_s = seconds
        else:
            self.checkpoint_s = seconds

    def calibrated(self, step: int) -> bool:
        """Whether enough steps were timed to fit (the loop then fits once, and again after each overhead)."""
        return self.timed_from is not None and step - self.timed_from[0] >= CALIBRATION_STEPS

    def seconds_per_step(self, step: int) -> float:
        """Mean step time since timing began, validations and checkpoints excluded."""
        first, began = self.timed_from
        return max(now() - began - self.overhead_s, 0.0) / max(step - first, 1)

    def expired(self) -> bool:
        return now() >= self.deadline

    def fit(self, step: int) -> int:
        """The total step count that fits before the deadline (>= step, <= cap)."""
        per_step = self.seconds_per_step(step)
        if self.validate_every and self.validation_s is not None:
            per_step += self.validation_s / self.validate_every
        if self.checkpoint_every and self.checkpoint_s is not None:
            per_step += self.checkpoint_s / self.checkpoint_every
        # after the last step: a checkpoint and final/, and a validation of the model it ends with
        left = self.deadline - now() - (self.checkpoint_s or 0.0) - (self.validation_s or 0.0)
        self.fits += 1
        if left <= 0:
            return step
        more = math.floor(left / per_step) if per_step > 0 else self.cap
        return max(step, min(self.cap, step + more))


def loop_deadline(max_minutes: float | None, elapsed_before: float, deadline: float | None) -> float | None:
    """The earlier of `deadline` (a recipe stage's) and what train.max_minutes leaves after the run's earlier
    attempts (`elapsed_before` seconds); None when neither applies."""
    ends = [] if deadline is None else [deadline]
    if max_minutes is not None:
        ends.append(now() + max_minutes * 60.0 - elapsed_before)
    return min(ends) if ends else None
