"""Fixtures for the training-loop tests: the toy task module, DreamBooth subject pictures, CPU-only training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw


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


def _draw_subject(folder: Path, n: int = 3) -> Path:
    """n small pictures of one red circle, shifted a little (a DreamBooth subject folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = Image.new("RGB", (40, 40), (250, 250, 240))
        ImageDraw.Draw(image).ellipse((4 + 2 * i, 6, 30 + 2 * i, 32), fill=(200, 40, 30), outline=(0, 0, 0))
        image.save(folder / f"{i}.png")
    return folder


@pytest.fixture
def subject():
    """`subject(folder, n=3)` writes n subject pictures into folder and returns it."""
    return _draw_subject
