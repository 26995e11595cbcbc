"""What a run folder records: resolved config, versions, seed, metrics.jsonl, loss curve; bf16 runs."""

from __future__ import annotations

import dataclasses
import json

import torch
from PIL import Image

from ldmkit.config import TrainConfig, load_recipe
from ldmkit.training import train

CFG = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=3, log_every=2,
                  seed=11, progress_bar=True)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """A component recipe as a trainer would define it."""

    name: str = "toy"
    """Recipe name."""
    train: TrainConfig = CFG
    """Loop settings."""


def test_run_folder_records_config_versions_metrics_and_plot(toy, tmp_path, capsys):
    result = train(toy.ToyTask(), CFG, tmp_path, recipe=_Recipe())
    assert result.samples_seen == 6 * 4 * 2
    assert load_recipe(tmp_path / "config.yaml", _Recipe) == _Recipe()
    assert load_recipe(tmp_path / "train_config.yaml", TrainConfig) == CFG
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["seed"] == 11 and info["effective_batch"] == 8 and info["num_processes"] == 1
    versions = info["starts"][0]["versions"]
    assert versions["torch"].startswith("2.") and versions["ldmkit"] is not None
    assert "git_commit" in info["starts"][0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(r["samples_per_s"] > 0 and r["lr"] == CFG.lr and r["loss"] > 0 for r in rows)
    assert all(abs(r["loss"] - r["mse"]) < 1e-9 for r in rows)  # task metrics averaged like the loss
    assert Image.open(tmp_path / "loss_curve.png").size[0] > 100
    err = capsys.readouterr().err
    assert "6/6" in err and "samples_s" in err  # tqdm on stderr


def test_bf16_autocast_trains(toy, tmp_path):
    cfg = dataclasses.replace(CFG, mixed_precision="bf16", steps=8, progress_bar=False, lr=5e-2)
    task = toy.ToyTask(noisy=False)
    seen, flash = [], []
    original = task.loss

    def spy(modules, batch, generator):
        device = batch["x"].device.type
        seen.append(torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device))
        flash.append(torch.backends.cuda.flash_sdp_enabled())  # the global SDPA flag, CPU included
        # the prepared module computes in bf16 inside (accelerate hands back fp32 outputs)
        hidden = modules["net"][0](batch["x"])
        seen.append(hidden.dtype)
        return original(modules, batch, generator)

    task.loss = spy
    result = train(task, cfg, tmp_path)
    assert result.step == 8 and result.nonfinite_skipped == 0
    assert seen and all(d == torch.bfloat16 for d in seen)  # autocast was on
    assert flash == [False] * len(flash)  # CPU + bf16: the math attention kernel (faster there)
    assert torch.backends.cuda.flash_sdp_enabled()  # and restored afterwards
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_fp32_keeps_the_flash_attention_kernel(toy, tmp_path):
    task = toy.ToyTask(noisy=False)
    flash = []
    original = task.loss

    def spy(modules, batch, generator):
        flash.append(torch.backends.cuda.flash_sdp_enabled())
        return original(modules, batch, generator)

    task.loss = spy
    train(task, dataclasses.replace(CFG, steps=2, progress_bar=False, checkpoint_every=0), tmp_path)
    assert flash and all(flash)
