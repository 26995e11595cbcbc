"""Data order, learning-rate schedule and EMA against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ldmkit.config import TrainConfig
from ldmkit.config.training import ema_warmup_decay, ema_warmup_reach
from ldmkit.errors import UsageError
from ldmkit.training.ema import EMA
from ldmkit.training.sampler import DataOrder, DataPosition
from ldmkit.training.schedule import lr_at


def _stream(order: DataOrder, micro_steps: int) -> list[list[int]]:
    return [order.next_batch() for _ in range(micro_steps)]


def test_each_epoch_is_a_permutation_and_the_stream_crosses_epochs():
    order = DataOrder(10, seed=3, batch_size=4)
    flat = sum(_stream(order, 5), [])  # 20 ids = exactly two epochs
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # a fresh permutation per epoch
    assert flat == order.permutation(0) + order.permutation(1)
    assert order.position == DataPosition(1, 10)


def test_processes_get_disjoint_contiguous_shards_of_the_same_stream():
    single = DataOrder(13, seed=5, batch_size=6)
    shards = [DataOrder(13, seed=5, batch_size=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(7):
        both = [s.next_batch() for s in shards]
        assert both[0] + both[1] == single.next_batch()


def test_position_resumes_the_same_stream():
    full = DataOrder(7, seed=1, batch_size=3)
    head = _stream(full, 4)
    resumed = DataOrder(7, seed=1, batch_size=3, position=full.position)
    tail = _stream(resumed, 5)
    assert head + tail == _stream(DataOrder(7, seed=1, batch_size=3), 9)


def test_lr_warmup_then_cosine_closed_form():
    cfg = TrainConfig(steps=110, lr=2e-3, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in range(3)] == [2e-3 * 1 / 10, 2e-3 * 2 / 10, 2e-3 * 3 / 10]
    assert lr_at(9, cfg) == 2e-3 and lr_at(10, cfg) == 2e-3
    for step in (10, 35, 60, 85, 109, 110):
        t = (step - 10) / 100
        assert math.isclose(lr_at(step, cfg), 2e-4 + 1.8e-3 * 0.5 * (1 + math.cos(math.pi * t)))
    constant = TrainConfig(steps=50, lr=1e-3, warmup_steps=0)
    assert {lr_at(s, constant) for s in range(50)} == {1e-3}


def test_ema_matches_the_recurrence_and_applied_restores_weights_bitwise():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = EMA({"net": net}, decay=0.9)
    expected = net.weight.detach().clone()
    for step in range(1, 41):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        ema.update(step)
        d = min(0.9, step / (9 + step))  # warm-up: (1 + n) / (10 + n) with n = step - 1 updates before
        expected = d * expected + (1 - d) * net.weight.detach()
    torch.testing.assert_close(ema.shadow["net.weight"], expected)
    assert min(0.9, 1 / 10) == 0.1 and min(0.9, 40 / 49) < 0.9  # the warm-up is active early, not late
    trained = net.weight.detach().clone()
    with ema.applied():
        assert torch.equal(net.weight, ema.shadow["net.weight"])
    assert torch.equal(net.weight, trained)


def test_ema_without_warmup_applies_its_decay_from_the_first_step():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = EMA({"net": net}, decay=0.9, warmup=False)
    expected = net.weight.detach().clone()
    for step in range(1, 4):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        ema.update(step)
        expected = 0.9 * expected + 0.1 * net.weight.detach()
    torch.testing.assert_close(ema.shadow["net.weight"], expected)


def test_ema_warmup_reach_is_the_first_step_at_the_decay():
    for decay in (0.5, 0.9, 0.99, 0.995, 0.999, 0.9995, 0.9999):
        step = ema_warmup_reach(decay)
        assert ema_warmup_decay(1.0, step) >= decay
        assert step == 0 or ema_warmup_decay(1.0, step - 1) < decay
    assert ema_warmup_reach(0.999) == 8990  # the update after optimizer step 8,991


def test_a_run_that_ends_before_the_warmup_reaches_the_decay_is_told_so():
    short = TrainConfig(steps=2213, ema_decay=0.9995)
    message = short.ema_shortfall(2213)
    assert "only at step 17,991" in message and "ends at step 2,213" in message and "0.99595" in message
    assert "ema_warmup false" in message
    assert TrainConfig(steps=20000, ema_decay=0.999).ema_shortfall(20000) is None
    assert TrainConfig(steps=100, ema_decay=0.999, ema_warmup=False).ema_shortfall(100) is None
    assert TrainConfig(steps=100).ema_shortfall(100) is None  # EMA off


def test_ema_warmup_off_without_an_ema_is_an_error():
    with pytest.raises(UsageError, match="ema_warmup false has no effect"):
        TrainConfig(ema_warmup=False)
    with pytest.raises(UsageError, match="ema_warmup"):
        TrainConfig(ema_decay=0.9, ema_warmup="no")
