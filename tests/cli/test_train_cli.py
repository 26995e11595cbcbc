"""`ldmkit train`: arguments, errors, and SIGKILL + `train resume` of configs/tiny.yaml equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ldmkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
# a shorter tiny run: 16 steps, checkpoints every 4
SHORT = ["--set", "train.steps=16", "--set", "train.checkpoint_every=4", "--set", "train.progress_bar=false",
         "--set", "data.builtin_n=24"]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "ldmkit", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            out[f"{path.relative_to(folder)}:{key}"] = tensor
    return out


def _assert_bitwise_equal(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_train_help_lists_trainers(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for word in ("unet", "vae", "clip", "resume"):
        assert word in out


def test_bad_override_and_missing_run_are_reported(tmp_path, capsys):
    assert main(["train", "unet", "--config", str(TINY), "--out", str(tmp_path / "r"), "--set", "unet.nope=1"]) == 2
    assert "unknown key 'unet.nope'" in capsys.readouterr().err
    assert main(["train", "resume", str(tmp_path / "nothing")]) == 2
    assert "holds no training run" in capsys.readouterr().err


def test_a_vae_run_folder_is_not_reused_for_a_unet_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer.json").write_text('{"trainer": "vae"}')
    assert main(["train", "unet", "--config", str(TINY), "--out", str(run)]) == 2
    assert "holds a `vae` run" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    reference = _cli("train", "unet", "--config", str(TINY), "--out", str(tmp_path / "ref"), *SHORT)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 16

    run = tmp_path / "run"
    child = _cli("train", "unet", "--config", str(TINY), "--out", str(run), *SHORT)
    marker = run / "checkpoints" / "step-00000008" / "COMPLETE"
    deadline = time.monotonic() + 240
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "final").exists()

    resumed = _cli("train", "resume", str(run))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 16 and summary["resumed_from_step"] >= 8
    _assert_bitwise_equal(_tensors(run / "final"), _tensors(tmp_path / "ref" / "final"))
    last = Path("checkpoints") / "step-00000016"
    _assert_bitwise_equal(_tensors(run / last), _tensors(tmp_path / "ref" / last))
