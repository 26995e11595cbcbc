"""`accelerate launch --num_processes 2` on CPU (gloo): effective batch, sharding, DDP-averaged gradients, resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint_files import checkpoint_name

ARGS = ["batch_size=2", "grad_accum=2", "lr=1e-2", "checkpoint_every=2", "log_every=1", "progress_bar=false",
        "deterministic=true", "noisy=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run_dir: Path, steps: int, ids: Path | None, *extra: str) -> dict:
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu selects accelerate's torchrun launcher; with no GPU the loop joins the processes over gloo
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(Path(__file__).with_name("toy_task.py")), str(run_dir), f"steps={steps}",
           *([f"ids_log={ids}"] if ids is not None else []), *ARGS, *extra]
    # CPU processes over gloo, even on a machine with a GPU (hide it)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, [line for line in done.stderr.splitlines() if "Error" in line][:20]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(toy, tmp_path):
    out = _launch(tmp_path / "ddp", 4, tmp_path / "ids")
    assert out == {"step": 4, "samples_seen": 4 * 2 * 2 * 2}  # batch_size * processes * grad_accum per step
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["num_processes"] == 2 and info["effective_batch"] == 8
    resumed = _launch(tmp_path / "ddp", 6, tmp_path / "ids_resumed")  # resume from step 4 with 2 processes
    assert resumed["step"] == 6

    single_ids = tmp_path / "single_ids"
    cfg = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=2, progress_bar=False,
                      deterministic=True)
    train(toy.ToyTask(noisy=False, ids_log=single_ids), cfg, tmp_path / "single")

    def lines(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    rank0 = lines(Path(f"{tmp_path / 'ids'}.rank0")) + lines(Path(f"{tmp_path / 'ids_resumed'}.rank0"))
    rank1 = lines(Path(f"{tmp_path / 'ids'}.rank1")) + lines(Path(f"{tmp_path / 'ids_resumed'}.rank1"))
    assert [a + b for a, b in zip(rank0, rank1)] == lines(single_ids)  # disjoint shards of one stream

    for step in (4, 6):
        ddp = toy.checkpoint_contents(tmp_path / "ddp" / "checkpoints" / checkpoint_name(step))
        one = toy.checkpoint_contents(tmp_path / "single" / "checkpoints" / checkpoint_name(step))
        for key, value in one.items():
            if key.startswith(("model.", "optimizer.safetensors")):
                # mean of two per-process means == mean over the doubled batch (up to float rounding)
                torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=f"{key} at step {step}")
        assert "rng.rank1.json" in ddp and any(k.startswith("rng.rank1.safetensors:") for k in ddp)


@pytest.mark.slow
def test_two_processes_fit_one_step_count_to_a_time_budget(tmp_path):
    """Only process 0 knows the run's earlier wall time, and each process times its own steps: both must
    end at the same fitted step (the smallest), or the last all-reduce would wait for ever."""
    out = _launch(tmp_path / "ddp", 1_000_000, None, "checkpoint_every=0", "log_every=50", "max_minutes=0.1")
    assert 0 < out["step"] < 1_000_000
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    fits = [r for r in rows if r.get("event") == "time_budget"]
    assert fits and fits[-1]["total_steps"] == out["step"]
