"""Exact resume on a CUDA GPU (skipped without one): SIGKILL mid-run, resume, compare bitwise.

Each run is its own process (CUDA cannot be used in forked children), so this is slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldmkit.training.checkpoint_files import checkpoint_name

ARGS = ["steps=10", "batch_size=8", "grad_accum=2", "lr=3e-2", "warmup_steps=2", "lr_schedule=cosine",
        "ema_decay=0.8", "checkpoint_every=3", "log_every=5", "deterministic=true", "progress_bar=false"]


def _run(run_dir: Path, *extra: str) -> int:
    script = Path(__file__).with_name("toy_task.py")
    done = subprocess.run([sys.executable, str(script), str(run_dir), *ARGS, *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_gpu_sigkill_then_resume_is_bitwise(toy, tmp_path, monkeypatch, precision):
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    assert _run(tmp_path / "reference", f"mixed_precision={precision}") == 0
    assert _run(tmp_path / "run", f"mixed_precision={precision}", "kill_at_call=14") == -9  # inside step 7
    assert _run(tmp_path / "run", f"mixed_precision={precision}") == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["starts"][-1]["resumed_from_step"] == 6
    final = checkpoint_name(10)
    contents = toy.checkpoint_contents(tmp_path / "run" / "checkpoints" / final)
    assert any(key.startswith("rng.rank0.safetensors:cuda_") for key in contents)
    if precision == "fp16":
        assert json.loads((tmp_path / "run" / "checkpoints" / final / "state.json").read_text())["grad_scaler"]
    toy.assert_same_contents(contents, toy.checkpoint_contents(tmp_path / "reference" / "checkpoints" / final))
