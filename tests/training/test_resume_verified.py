"""Resume never loses a run: SHA-256 per checkpoint file, fallback to the newest one that verifies, a clear
refusal when none does (nothing touched), and `--restart` that keeps what it sets aside."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint import CheckpointError, restart_run
from ldmkit.training.checkpoint_files import MARKER, UNVERIFIED, checkpoint_name, file_sha256, survey, verify

CFG = TrainConfig(steps=8, batch_size=4, lr=1e-2, ema_decay=0.5, checkpoint_every=2, keep_last=10,
                  log_every=4, deterministic=True, progress_bar=False)


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _flip_one_bit(path, offset_from_end=16):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01  # inside the tensor data: the size stays the same
    path.write_bytes(bytes(data))


def test_marker_records_a_sha256_per_file(toy, tmp_path):
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=2), tmp_path)
    folder = tmp_path / "checkpoints" / checkpoint_name(2)
    marker = json.loads((folder / MARKER).read_text())
    assert set(marker["sha256"]) == set(marker["files"]) and "optimizer.safetensors" in marker["sha256"]
    assert all(file_sha256(folder / name) == digest for name, digest in marker["sha256"].items())
    assert verify(folder).ok and verify(folder).hashed


def test_bit_flip_falls_back_to_the_newest_checkpoint_that_verifies(toy, tmp_path, capsys):
    reference = tmp_path / "reference"
    train(toy.ToyTask(), CFG, reference)
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=6), run_dir)
    ckpts = run_dir / "checkpoints"
    flipped = ckpts / checkpoint_name(6) / "model.net.safetensors"
    size = flipped.stat().st_size
    _flip_one_bit(flipped)
    assert flipped.stat().st_size == size
    damaged = flipped.read_bytes()
    best, rejected = survey(run_dir)
    assert best.step == 4 and [v.step for v in rejected] == [6] and "SHA-256" in rejected[0].problem
    capsys.readouterr()

    task = toy.ToyTask()
    result = train(task, CFG, run_dir)
    err = capsys.readouterr().err
    assert result.resumed_from_step == 4 and result.step == 8
    notes = [line for line in err.splitlines() if "resuming from" in line]
    assert len(notes) == 1 and checkpoint_name(4) in notes[0] and "model.net.safetensors" in notes[0]
    kept = ckpts / (checkpoint_name(6) + UNVERIFIED)
    assert (kept / "model.net.safetensors").read_bytes() == damaged  # kept, never overwritten
    toy.assert_same_contents(  # the run goes on exactly as if nothing had happened
        toy.checkpoint_contents(ckpts / checkpoint_name(8)),
        toy.checkpoint_contents(reference / "checkpoints" / checkpoint_name(8)),
    )


def test_all_checkpoints_truncated_is_refused_and_nothing_changes(toy, tmp_path):
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    for folder in (run_dir / "checkpoints").iterdir():
        for path in folder.glob("*.safetensors"):
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _snapshot(run_dir)
    with pytest.raises(CheckpointError) as err:
        train(toy.ToyTask(), CFG, run_dir)
    message = str(err.value)
    assert "no checkpoint verifies" in message and checkpoint_name(4) in message and checkpoint_name(2) in message
    assert "final/" in message and "--restart" in message
    after = _snapshot(run_dir)
    assert after == before  # no checkpoint deleted, final/ not overwritten, nothing recorded


def test_restart_sets_everything_aside_and_trains_from_zero(toy, tmp_path):
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    for path in (run_dir / "checkpoints").glob("*/optimizer.safetensors"):
        _flip_one_bit(path)
    old_final = _snapshot(run_dir / "final")
    moved = restart_run(run_dir)
    assert sorted(p.name for p in moved) == sorted(
        [checkpoint_name(2) + UNVERIFIED, checkpoint_name(4) + UNVERIFIED, "final" + UNVERIFIED])
    assert _snapshot(run_dir / ("final" + UNVERIFIED)) == old_final
    result = train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    assert result.resumed_from_step is None and result.step == 4 and (run_dir / "final").is_dir()
    with pytest.raises(CheckpointError, match="verifies"):  # now a checkpoint verifies: --restart has no effect
        restart_run(run_dir)


def test_checkpoint_without_hashes_still_resumes_with_a_note(toy, tmp_path, capsys):
    reference = tmp_path / "reference"
    train(toy.ToyTask(), CFG, reference)
    run_dir = tmp_path / "run"
    train(toy.ToyTask(), dataclasses.replace(CFG, steps=4), run_dir)
    for marker in (run_dir / "checkpoints").glob(f"*/{MARKER}"):  # as written before hashes existed
        info = json.loads(marker.read_text())
        marker.write_text(json.dumps({"step": info["step"], "files": info["files"]}))
    capsys.readouterr()
    result = train(toy.ToyTask(), CFG, run_dir)
    assert result.resumed_from_step == 4
    assert "checked by file size only" in capsys.readouterr().err
    toy.assert_same_contents(
        toy.checkpoint_contents(run_dir / "checkpoints" / checkpoint_name(8)),
        toy.checkpoint_contents(reference / "checkpoints" / checkpoint_name(8)),
    )
