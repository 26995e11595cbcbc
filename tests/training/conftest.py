"""Fixtures for the training-loop tests: the toy task module and a fast, deterministic default config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch


def _load_toy():
    name = "ldmkit_tests_toy_task"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("toy_task.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def toy():
    """The toy_task module (ToyTask, run_in_child, checkpoint_contents, ...)."""
    torch.set_num_threads(1)
    return _load_toy()


@pytest.fixture(autouse=True)
def _train_on_cpu(monkeypatch):
    """These tests pin bitwise results and fork children: run the loop on the CPU even beside a GPU."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
