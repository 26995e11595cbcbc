"""The real trainers under `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), through the CLI.

`--cpu` would start one process only, so (as in test_multiprocess.py) --multi_gpu selects the torchrun
launcher and ACCELERATE_USE_CPU plus a hidden GPU make the loop join the processes over gloo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
FAST = ["train.progress_bar=false", "data.builtin_n=16", "train.checkpoint_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(kind: str, config: Path, run_dir: Path, *overrides: str) -> dict:
    """`accelerate launch ... -m ldmkit train KIND`; returns the summary line (printed by process 0 only)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "ldmkit", "train", kind, "--config", str(config), "--out", str(run_dir)]
    for item in (*FAST, *overrides):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert done.returncode == 0, [line for line in done.stderr.splitlines() if "Error" in line][:20]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, done.stdout  # one summary, not one per process
    return summaries[0]


def _run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.slow
def test_unet_trainer_under_two_processes_trains_checkpoints_and_resumes(tmp_path):
    from ldmkit.pipeline import Pipeline

    run = tmp_path / "unet"
    out = _launch("unet", CONFIGS / "tiny.yaml", run, "train.steps=4", "train.batch_size=4", "train.grad_accum=2")
    assert out["step"] == 4 and out["final"] == str(run / "final")
    info = _run_info(run)
    assert info["num_processes"] == 2
    assert info["effective_batch"] == 4 * 2 * 2  # batch_size x processes x grad_accum
    # one shared dataset and cache (process 0 built them first), one RNG record per process
    checkpoint = run / "checkpoints" / "step-00000004"
    assert {p.name for p in checkpoint.glob("rng.rank*.json")} == {"rng.rank0.json", "rng.rank1.json"}
    assert json.loads((checkpoint / "state.json").read_text())["num_processes"] == 2
    for folder in (run / "final", checkpoint / "model"):
        image = Pipeline.from_pretrained(folder)("a red square", steps=2, seed=0).images[0]
        assert image.size == (32, 32)
    # resuming with 2 processes goes on from the newest checkpoint
    resumed = _launch("unet", CONFIGS / "tiny.yaml", run, "train.steps=6", "train.batch_size=4", "train.grad_accum=2")
    assert resumed["step"] == 6 and resumed["resumed_from_step"] == 4
    assert [start["resumed_from_step"] for start in _run_info(run)["starts"]] == [None, 4]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vae", "clip"])
def test_vae_and_clip_trainers_run_under_two_processes(tmp_path, kind):
    from ldmkit.models.folder import load_components

    run = tmp_path / kind
    out = _launch(kind, CONFIGS / f"{kind}-shapes.yaml", run, "train.steps=2", "train.batch_size=4",
                  "train.validate_every=0")
    assert out["step"] == 2
    info = _run_info(run)
    assert info["num_processes"] == 2 and info["effective_batch"] == 4 * 2 * 1
    components = load_components(run / "final")
    if kind == "vae":
        assert components.vae.config.scaling_factor != 1.0  # measured from the data on process 0
    else:
        from ldmkit.models.dual_encoder import load_dual_encoder

        assert load_dual_encoder(run / "final").encode_texts(["a red square"]).shape[0] == 1
