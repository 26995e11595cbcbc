"""Exact resume: a run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import random

import pytest

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint_files import checkpoint_name

# 12 steps x 2 micro-batches of 4 over 40 samples: the data order crosses two epoch boundaries.
CFG = TrainConfig(
    steps=12, batch_size=4, grad_accum=2, lr=3e-2, warmup_steps=3, lr_schedule="cosine", ema_decay=0.8,
    weight_decay=0.01, grad_clip=0.5, checkpoint_every=3, keep_last=2, log_every=2, validate_every=4,
    deterministic=True, progress_bar=False,
)
# Three kill points (loss calls, 2 per step) drawn once with a fixed seed: inside steps 2..12.
KILL_CALLS = sorted(random.Random(2024).sample(range(3, 2 * CFG.steps + 1), 3))


def _ids(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """An uninterrupted run: its final checkpoint contents and the sample ids of every micro-step."""
    run_dir = tmp_path_factory.mktemp("reference")
    ids = tmp_path_factory.mktemp("reference_ids") / "ids.jsonl"
    result = train(toy.ToyTask(ids_log=ids), CFG, run_dir)
    assert result.step == CFG.steps and result.resumed_from_step is None and not result.interrupted
    final = run_dir / "checkpoints" / checkpoint_name(CFG.steps)
    return toy.checkpoint_contents(final), _ids(ids), run_dir


@pytest.mark.parametrize("kill_call", KILL_CALLS)
def test_sigkill_then_resume_matches_uninterrupted(toy, tmp_path, reference, kill_call):
    ref_contents, ref_ids, ref_dir = reference
    run_dir = tmp_path / "run"
    code = toy.run_in_child(lambda: train(toy.ToyTask(kill_at_call=kill_call), CFG, run_dir))
    assert code == -9, "the child should have been killed by SIGKILL"
    killed_in_step = (kill_call - 1) // CFG.grad_accum + 1
    expected_resume = (killed_in_step - 1) // CFG.checkpoint_every * CFG.checkpoint_every

    ids = tmp_path / "resumed.ids"
    task = toy.ToyTask(ids_log=ids)
    result = train(task, CFG, run_dir)
    assert result.resumed_from_step == (expected_resume or None)
    assert result.step == CFG.steps and task.calls == (CFG.steps - expected_resume) * CFG.grad_accum
    # the same samples in the same order from the resume point on
    assert _ids(ids) == ref_ids[expected_resume * CFG.grad_accum :]
    # model, EMA, optimizer, RNG states, data position, counters: all bitwise equal
    final = run_dir / "checkpoints" / checkpoint_name(CFG.steps)
    toy.assert_same_contents(toy.checkpoint_contents(final), ref_contents)
    assert (run_dir / "final" / "net.safetensors").read_bytes() == (ref_dir / "final" / "net.safetensors").read_bytes()
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    steps_logged = [row["step"] for row in rows if "event" not in row]  # each start may note events (ema_shortfall)
    assert steps_logged == sorted(set(steps_logged)), "metrics.jsonl repeats steps after resume"


def test_resuming_a_resumed_run_does_the_same_total_steps(toy, tmp_path, reference):
    ref_contents = reference[0]
    run_dir = tmp_path / "run"
    first, second = KILL_CALLS[0], 2 * CFG.checkpoint_every + 1  # second kill counts calls after resume
    assert toy.run_in_child(lambda: train(toy.ToyTask(kill_at_call=first), CFG, run_dir)) == -9
    assert toy.run_in_child(lambda: train(toy.ToyTask(kill_at_call=second), CFG, run_dir)) == -9
    task = toy.ToyTask()
    result = train(task, CFG, run_dir)
    assert result.step == CFG.steps and result.samples_seen == CFG.steps * CFG.batch_size * CFG.grad_accum
    final = run_dir / "checkpoints" / checkpoint_name(CFG.steps)
    toy.assert_same_contents(toy.checkpoint_contents(final), ref_contents)
    # a finished run resumed again does no step at all
    again = toy.ToyTask()
    result = train(again, CFG, run_dir)
    assert again.calls == 0 and result.step == CFG.steps and result.resumed_from_step == CFG.steps
    starts = json.loads((run_dir / "run.json").read_text())["starts"]
    assert len(starts) == 4 and starts[-1]["resumed_from_step"] == CFG.steps


def test_validation_does_not_change_the_trajectory(toy, tmp_path, reference):
    import dataclasses

    task = toy.ToyTask()
    train(task, dataclasses.replace(CFG, validate_every=0), tmp_path)
    assert task.validated == []
    assert reference[1] is not None
    contents = toy.checkpoint_contents(tmp_path / "checkpoints" / checkpoint_name(CFG.steps))
    toy.assert_same_contents(contents, reference[0])
