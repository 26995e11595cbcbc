"""SIGINT / SIGTERM: the loop finishes the current step, saves a checkpoint and returns; resume is exact."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from ldmkit.config import TrainConfig
from ldmkit.training import train
from ldmkit.training.checkpoint_files import checkpoint_name, newest_complete

CFG = TrainConfig(steps=9, batch_size=4, grad_accum=2, lr=1e-2, ema_decay=0.6, checkpoint_every=4,
                  log_every=3, deterministic=True, progress_bar=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_matches(toy, tmp_path, signum):
    reference = tmp_path / "reference"
    train(toy.ToyTask(), CFG, reference)

    class Signalling(toy.ToyTask):
        def loss(self, modules, batch, generator):
            if self.calls + 1 == 11:  # inside step 6 (calls 11-12)
                os.kill(os.getpid(), signum)
            return super().loss(modules, batch, generator)

    before = signal.getsignal(signum)
    result = train(Signalling(), CFG, tmp_path / "run")
    assert signal.getsignal(signum) is before  # handlers restored
    assert result.interrupted and result.step == 6 and result.final_dir is None
    assert newest_complete(tmp_path / "run")[0] == 6

    resumed = train(toy.ToyTask(), CFG, tmp_path / "run")
    assert resumed.resumed_from_step == 6 and not resumed.interrupted
    toy.assert_same_contents(
        toy.checkpoint_contents(tmp_path / "run" / "checkpoints" / checkpoint_name(9)),
        toy.checkpoint_contents(reference / "checkpoints" / checkpoint_name(9)),
    )


def test_interrupt_right_after_a_scheduled_checkpoint_keeps_it(toy, tmp_path):
    # call 8 is the last of step 4, which also checkpoints: the interrupt must not re-write it
    result = train(toy.ToyTask(interrupt_at_call=8), dataclasses.replace(CFG), tmp_path)
    assert result.step == 4 and result.interrupted
    assert newest_complete(tmp_path)[0] == 4
