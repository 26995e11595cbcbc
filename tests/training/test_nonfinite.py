"""The NaN/Inf guard: a non-finite step changes nothing but a counter; K in a row stop with diagnostics."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ldmkit.config import TrainConfig
from ldmkit.training import NonFiniteError, train
from ldmkit.training.checkpoint_files import checkpoint_name, complete_checkpoints

CFG = TrainConfig(steps=4, batch_size=4, lr=1e-2, ema_decay=0.7, checkpoint_every=1, keep_last=20,
                  log_every=1, deterministic=True, progress_bar=False, max_nonfinite_in_a_row=3)


def _ckpt(toy, run_dir, step):
    contents = toy.checkpoint_contents(run_dir / "checkpoints" / checkpoint_name(step))
    # what a skipped step may change: the step counter, the data position and the RNG streams
    return {k: v for k, v in contents.items() if k not in ("state.json",) and not k.startswith("rng.")}


def test_nan_step_is_skipped_counted_and_leaves_weights_optimizer_ema_unchanged(toy, tmp_path):
    task = toy.ToyTask(nan_at_calls=(4,))
    result = train(task, dataclasses.replace(CFG, steps=6), tmp_path)
    assert result.step == 6 and result.nonfinite_skipped == 1
    toy.assert_same_contents(_ckpt(toy, tmp_path, 4), _ckpt(toy, tmp_path, 3))
    state = json.loads((tmp_path / "checkpoints" / checkpoint_name(4) / "state.json").read_text())
    assert state["nonfinite_total"] == 1 and state["nonfinite_in_a_row"] == 1
    # training went on afterwards: step 5 moved the weights again and reset the streak
    after = _ckpt(toy, tmp_path, 5)
    assert not all(after[k].equal(v) for k, v in _ckpt(toy, tmp_path, 4).items() if k.startswith("model."))
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skips = [e for e in events if e.get("event") == "nonfinite_skip"]
    assert len(skips) == 1 and skips[0]["step"] == 4 and skips[0]["nonfinite_loss"]
    assert "net.0.weight" in skips[0]["nonfinite_grads"]


def test_k_nonfinite_steps_in_a_row_stop_with_diagnostics(toy, tmp_path):
    task = toy.ToyTask(nan_at_calls=(2, 3, 4, 5))
    with pytest.raises(NonFiniteError, match="3 steps in a row") as info:
        train(task, dataclasses.replace(CFG, steps=10), tmp_path)
    assert "nonfinite.json" in str(info.value)
    report = json.loads((tmp_path / "nonfinite.json").read_text())
    assert report["stopped_at_step"] == 4 and report["in_a_row"] == 3
    assert [s["step"] for s in report["steps"]] == [2, 3, 4]
    every_grad = ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"]  # NaN loss: all gradients NaN
    assert all(s["nonfinite_loss"] and s["nonfinite_grads"] == every_grad for s in report["steps"])
    assert task.calls == 4  # stopped at once


def test_nan_gradient_with_a_finite_loss_is_caught_and_named(toy, tmp_path):
    result = train(toy.ToyTask(nan_grad_at_calls=(2,)), dataclasses.replace(CFG, steps=3), tmp_path)
    assert result.nonfinite_skipped == 1
    toy.assert_same_contents(_ckpt(toy, tmp_path, 2), _ckpt(toy, tmp_path, 1))
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (skip,) = [e for e in events if e.get("event") == "nonfinite_skip"]
    assert skip["nonfinite_loss"] is False and skip["nonfinite_grads"] == ["net.3.bias"]


def test_isolated_nan_steps_do_not_add_up_to_a_stop(toy, tmp_path):
    result = train(toy.ToyTask(nan_at_calls=(2, 3, 5, 6, 8, 9)), dataclasses.replace(CFG, steps=10), tmp_path)
    assert result.step == 10 and result.nonfinite_skipped == 6


def test_nonfinite_weights_are_never_checkpointed(toy, tmp_path):
    # lr beyond float32 range: the first update (finite loss, finite gradient) overflows the weights
    with pytest.raises(NonFiniteError, match="non-finite weights at step 1"):
        train(toy.ToyTask(), dataclasses.replace(CFG, lr=1e39, grad_clip=0.0), tmp_path)
    assert complete_checkpoints(tmp_path) == []
    report = json.loads((tmp_path / "nonfinite.json").read_text())
    assert report["step"] == 1 and "net.0.weight" in report["nonfinite_weights"]
