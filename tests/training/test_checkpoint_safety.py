"""Checkpoint folders: partial ones are ignored, old ones pruned, and nothing in a run folder is unpickled."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import shutil

import pytest
import torch

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint_files import MARKER, checkpoint_name, complete_checkpoints, newest_complete

CFG = TrainConfig(steps=8, batch_size=4, lr=1e-2, ema_decay=0.5, checkpoint_every=2, keep_last=10,
                  log_every=4, deterministic=True, progress_bar=False)


class _Payload:
    """Unpickling this touches a sentinel file: proof that something was loaded with pickle."""

    def __init__(self, sentinel: pathlib.Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def _steps(run_dir):
    return [step for step, _ in complete_checkpoints(run_dir)]


def test_partial_checkpoint_is_ignored_for_the_previous_complete_one(toy, tmp_path):
    reference = tmp_path / "reference"
    train(toy.ToyTask(), CFG, reference)
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    ckpts = run_dir / "checkpoints"
    # step 6 cut off mid-write: files copied, one truncated, no COMPLETE marker
    cut = ckpts / checkpoint_name(6)
    shutil.copytree(ckpts / checkpoint_name(4), cut)
    (cut / MARKER).unlink()
    data = (cut / "model.net.safetensors").read_bytes()
    (cut / "model.net.safetensors").write_bytes(data[: len(data) // 2])
    # step 8 sealed but a file lost its tail afterwards (size no longer matches the marker)
    bad = ckpts / checkpoint_name(8)
    shutil.copytree(ckpts / checkpoint_name(4), bad)
    (bad / MARKER).write_text((bad / MARKER).read_text().replace('"step": 4', '"step": 8'))
    (bad / "optimizer.safetensors").write_bytes((bad / "optimizer.safetensors").read_bytes()[:-8])
    # and the temporary folder of an attempt at step 10
    shutil.copytree(ckpts / checkpoint_name(4), ckpts / ".partial-step-00000010")
    assert newest_complete(run_dir)[0] == 4

    task = toy.ToyTask()
    result = train(task, CFG, run_dir)
    assert result.resumed_from_step == 4 and task.calls == 4 and result.step == 8
    toy.assert_same_contents(
        toy.checkpoint_contents(ckpts / checkpoint_name(8)),
        toy.checkpoint_contents(reference / "checkpoints" / checkpoint_name(8)),
    )


def test_keep_last_prunes_only_complete_checkpoints(toy, tmp_path):
    stray = tmp_path / "checkpoints" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    train(toy.ToyTask(), dataclasses.replace(CFG, keep_last=2), tmp_path)
    assert _steps(tmp_path) == [6, 8]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "notes.txt", checkpoint_name(6), checkpoint_name(8)]


def test_planted_pickles_are_never_loaded(toy, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    sentinel = tmp_path / "PWNED"
    evil = pickle.dumps(_Payload(sentinel))
    ckpts = run_dir / "checkpoints"
    newest = ckpts / checkpoint_name(4)
    for name in ("optimizer.pt", "model.net.bin", "rng.rank0.pkl", "ema.pth", "state.ckpt"):
        (newest / name).write_bytes(evil)
    (run_dir / "model.pt").write_bytes(evil)
    # a folder that looks newer and is "sealed", but holds only pickles
    fake = ckpts / checkpoint_name(99)
    fake.mkdir()
    (fake / "optimizer.pt").write_bytes(evil)
    (fake / MARKER).write_text('{"step": 99, "files": {"optimizer.pt": %d}}' % len(evil))
    # torch.save writes a zip of pickles: also never read
    torch.save({"x": _Payload(sentinel)}, newest / "extra.safetensors.pt")

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle loader was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    result = train(toy.ToyTask(), CFG, run_dir)
    assert result.resumed_from_step == 4 and result.step == 8
    assert not sentinel.exists()
    assert (fake / "optimizer.pt").read_bytes() == evil  # user files untouched


def test_payload_really_writes_the_sentinel_when_unpickled(tmp_path):
    sentinel = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Payload(sentinel)))  # the test above would notice a load
    assert sentinel.exists()


def test_resume_refuses_a_different_batch_size(toy, tmp_path):
    from ldmkit.errors import UsageError

    train(toy.ToyTask(), dataclasses.replace(CFG, steps=2), tmp_path)
    with pytest.raises(UsageError, match="batch_size=4.*batch_size=8"):
        train(toy.ToyTask(), dataclasses.replace(CFG, batch_size=8), tmp_path)
