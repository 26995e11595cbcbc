"""Time budgets: train.max_minutes and a recipe stage's deadline fit the step count to the time left.

A fake clock stands in for the wall clock: every loss call of the toy task takes 1 s of it, every
validation `validation_s`, so the fitted step counts are known exactly.
"""

from __future__ import annotations

import json

import pytest

from ldmkit.config import TrainConfig
from ldmkit.errors import UsageError
from ldmkit.training import time_budget, train
from ldmkit.training.schedule import lr_at
from ldmkit.training.time_budget import CALIBRATION_STEPS, UNTIMED_STEPS, TimeBudget

CFG = TrainConfig(steps=200, batch_size=4, lr=1e-2, lr_schedule="cosine", checkpoint_every=0, log_every=1,
                  progress_bar=False, deterministic=True)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time_budget, "now", fake)
    return fake


def _timed_task(toy, clock, validation_s: float = 0.0, **kwargs):
    task = toy.ToyTask(**kwargs)
    loss, validate = task.loss, task.validate

    def slow_loss(*args):
        clock.t += 1.0
        return loss(*args)

    def slow_validate(step, path):
        clock.t += validation_s
        validate(step, path)

    task.loss, task.validate = slow_loss, slow_validate
    return task


def _events(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == "time_budget"], [r for r in rows if "lr" in r]


def test_max_minutes_fits_the_steps_and_the_cosine_still_ends_at_its_floor(toy, clock, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "max_minutes": 1.0})  # 60 s of the fake clock, 1 s per step
    result = train(_timed_task(toy, clock), cfg, tmp_path / "run")
    assert result.step == 60 and not result.interrupted and result.final_dir is not None
    events, rows = _events(tmp_path / "run")
    calibrated_at = UNTIMED_STEPS + CALIBRATION_STEPS
    assert [(e["step"], e["total_steps"]) for e in events] == [(calibrated_at, 60)]
    assert events[0]["s_per_step"] == pytest.approx(1.0)
    assert rows[-1]["step"] == 60 and rows[-1]["lr"] == pytest.approx(lr_at(59, cfg, 60))
    assert lr_at(59, cfg, 60) < 0.01 * cfg.lr  # annealed by the fitted end, not cut off mid-schedule


def test_validation_cost_is_spread_over_the_steps_it_recurs_in(toy, clock, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "max_minutes": 2.0, "validate_every": 30})
    task = _timed_task(toy, clock, validation_s=15.0)
    result = train(task, cfg, tmp_path / "run")
    events, _ = _events(tmp_path / "run")
    # step 23: 23 s used, 97 s left at 1 s/step -> 120; step 30: the first validation (15 s) -> 1.5 s/step,
    # 15 s kept for validating the last model: 30 + floor((120 - 45 - 15) / 1.5) = 70; step 60: 90 s used,
    # 30 - 15 s left -> 60 + 10 = 70 (unchanged, no event)
    assert [(e["step"], e["total_steps"]) for e in events] == [(23, 120), (30, 70)]
    assert result.step == 70 and task.validated == [30, 60, 70]  # the model the budget ended with, validated
    assert clock.t - 1000.0 == pytest.approx(115.0)


def test_a_budget_that_is_not_needed_changes_nothing(toy, clock, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 40})
    plain = train(_timed_task(toy, clock), cfg, tmp_path / "plain")
    budgeted = train(_timed_task(toy, clock), TrainConfig(**{**cfg.__dict__, "max_minutes": 100.0}), tmp_path / "b")
    assert plain.step == budgeted.step == 40
    events, _ = _events(tmp_path / "b")
    assert [(e["step"], e["total_steps"]) for e in events] == [(23, 40)]  # the fit is recorded, capped by steps
    a = (tmp_path / "plain" / "final" / "net.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "final" / "net.safetensors").read_bytes()


def test_a_stage_deadline_is_kept_on_resume_and_dropped_without_one(toy, clock, tmp_path):
    run_dir = tmp_path / "run"
    cfg = TrainConfig(**{**CFG.__dict__, "checkpoint_every": 10})
    first = train(_timed_task(toy, clock, interrupt_at_call=45), cfg, run_dir, deadline=clock.t + 50.0)
    assert first.interrupted and first.step == 45
    state = json.loads((run_dir / "checkpoints" / "step-00000045" / "state.json").read_text())
    assert state["fitted_steps"] == 50
    # resumed with the rest of its deadline: the fitted end stands until this attempt fits again
    second = train(_timed_task(toy, clock), cfg, run_dir, deadline=clock.t + 5.0)
    assert second.step == 50 and not second.interrupted
    # resumed by hand without a deadline (`ldmkit train resume`): on to train.steps
    third = train(_timed_task(toy, clock), TrainConfig(**{**cfg.__dict__, "steps": 60}), run_dir)
    assert third.step == 60 and third.resumed_from_step == 50


def test_a_deadline_already_past_saves_what_there_is(toy, clock, tmp_path):
    run_dir = tmp_path / "run"
    cfg = TrainConfig(**{**CFG.__dict__, "checkpoint_every": 10})
    train(_timed_task(toy, clock, interrupt_at_call=12), cfg, run_dir)
    result = train(_timed_task(toy, clock), cfg, run_dir, deadline=clock.t - 1.0)
    assert result.step == 12 and not result.interrupted and (run_dir / "final").is_dir()


def test_a_budget_spent_before_the_first_step_trains_nothing_and_says_so(toy, clock, tmp_path):
    with pytest.raises(UsageError, match="ran out before the first training step"):
        train(_timed_task(toy, clock), CFG, tmp_path / "run", deadline=clock.t - 1.0)
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_fit_arithmetic():
    budget = TimeBudget(deadline=100.0, cap=1000, validate_every=10, checkpoint_every=20)
    budget.timed_from = (0, 0.0)
    budget.validation_s, budget.checkpoint_s = 5.0, 4.0
    time_budget_now = time_budget.now
    try:
        time_budget.now = lambda: 20.0  # 20 steps in 20 s: 1 s + 0.5 + 0.2 per step; 100 - 20 - 4 - 5 s left
        assert budget.fit(20) == 20 + int(71 / 1.7)
        time_budget.now = lambda: 200.0
        assert budget.fit(20) == 20 and budget.expired()
    finally:
        time_budget.now = time_budget_now


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 1e12, "soon", True])
def test_max_minutes_is_a_bounded_positive_number(bad):
    with pytest.raises(UsageError, match="max_minutes"):
        TrainConfig(max_minutes=bad)


def test_a_fitted_count_that_ends_before_the_ema_decay_is_said_once(toy, clock, tmp_path, capsys):
    # decay 0.9 is reached at step 81: within the 200-step cap, not within the 60 steps one fake minute fits
    cfg = TrainConfig(**{**CFG.__dict__, "max_minutes": 1.0, "ema_decay": 0.9})
    train(_timed_task(toy, clock), cfg, tmp_path / "run")
    said = [line for line in capsys.readouterr().err.splitlines() if "ema_decay" in line]
    assert len(said) == 1 and "only at step 81" in said[0] and "ends at step 60" in said[0]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["total_steps"] for r in rows if r.get("event") == "ema_shortfall"] == [60]
    beyond_cap = TrainConfig(**{**CFG.__dict__, "max_minutes": 1.0, "ema_decay": 0.99})  # reached at 891 > 200
    train(_timed_task(toy, clock), beyond_cap, tmp_path / "cap")
    said = [line for line in capsys.readouterr().err.splitlines() if "ema_decay" in line]
    assert len(said) == 1 and "ends at step 60," in said[0]  # the fitted count, not the 200-step cap
    plain = TrainConfig(**{**CFG.__dict__, "max_minutes": 1.0, "ema_decay": 0.9, "ema_warmup": False})
    train(_timed_task(toy, clock), plain, tmp_path / "plain")
    assert "ema_decay" not in capsys.readouterr().err


def test_a_run_without_a_budget_says_its_ema_shortfall_when_it_starts(toy, clock, tmp_path, capsys):
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 20, "ema_decay": 0.9})
    train(_timed_task(toy, clock), cfg, tmp_path / "run")
    said = [line for line in capsys.readouterr().err.splitlines() if "ema_decay" in line]
    assert len(said) == 1 and "only at step 81" in said[0] and "ends at step 20," in said[0]
    train(_timed_task(toy, clock), TrainConfig(**{**cfg.__dict__, "steps": 30}), tmp_path / "run")  # resumed: 20 -> 30
    said = [line for line in capsys.readouterr().err.splitlines() if "ema_decay" in line]
    assert len(said) == 1 and "ends at step 30," in said[0]
