"""The optional `export(step, path)` hook: written inside each checkpoint before COMPLETE, with EMA weights,
without changing what the checkpoint holds for resume or what training does afterwards."""

from __future__ import annotations

import random

import pytest
import torch

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint_files import checkpoint_name, complete_checkpoints

CFG = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=3e-2, warmup_steps=2, ema_decay=0.8, checkpoint_every=2,
                  keep_last=3, log_every=2, deterministic=True, progress_bar=False)


def _exporting(toy, **kwargs):
    """A ToyTask whose export writes its (EMA) weights and draws from every global RNG, as real exports may."""

    class ExportingToy(toy.ToyTask):
        exported: list[int] = []

        def export(self, step, path):
            from safetensors.torch import save_file

            torch.randn(5)
            random.random()
            path.mkdir()
            save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path / "net.safetensors"))
            self.exported.append(step)

    task = ExportingToy(**kwargs)
    task.exported = []
    return task


def test_export_leaves_resume_state_and_training_unchanged(toy, tmp_path):
    plain = train(toy.ToyTask(), CFG, tmp_path / "plain")
    task = _exporting(toy)
    exported = train(task, CFG, tmp_path / "exported")
    assert plain.step == exported.step == CFG.steps
    assert task.exported == [2, 4, 6]  # scheduled checkpoints; the end-of-run one is the step-6 one
    for step in (2, 4, 6):
        name = checkpoint_name(step)
        a = toy.checkpoint_contents(tmp_path / "plain" / "checkpoints" / name)
        b = toy.checkpoint_contents(tmp_path / "exported" / "checkpoints" / name)
        toy.assert_same_contents(a, b)  # top-level resume files bitwise equal: export changed nothing
    assert not (tmp_path / "plain" / "checkpoints" / checkpoint_name(6) / "model").exists()


def test_exported_weights_are_the_ema_weights(toy, tmp_path):
    from safetensors.torch import load_file

    train(_exporting(toy), CFG, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints" / checkpoint_name(6)
    ema = load_file(str(folder / "ema.safetensors"))
    raw = load_file(str(folder / "model.net.safetensors"))
    model = load_file(str(folder / "model" / "net.safetensors"))
    assert model.keys() == raw.keys()
    for key, value in model.items():
        assert torch.equal(value, ema[f"net.{key}"]), key
    assert any(not torch.equal(model[k], raw[k]) for k in model)  # EMA and training weights differ here


def test_a_failing_export_leaves_no_complete_checkpoint(toy, tmp_path):
    class Failing(toy.ToyTask):
        def export(self, step, path):
            path.mkdir()
            (path / "half-written").write_text("x")
            if step == 4:
                raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        train(Failing(), CFG, tmp_path / "run")
    assert [step for step, _ in complete_checkpoints(tmp_path / "run")] == [2]
    assert (tmp_path / "run" / "checkpoints" / checkpoint_name(2) / "model" / "half-written").is_file()
    # the next start resumes from step 2 and rewrites the partial step-4 checkpoint
    result = train(toy.ToyTask(), CFG, tmp_path / "run")
    assert result.resumed_from_step == 2 and result.step == CFG.steps
