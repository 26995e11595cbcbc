"""The recipe runner trains for real: keep its runs on the CPU even beside a GPU (as tests/training does)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _train_on_cpu(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
