"""Tiny model folders and datasets shared by the eval tests (imported by path from each test file)."""

import importlib.util
import json
from pathlib import Path

import torch
from PIL import Image

from ldmkit.data.builtin import build_dataset
from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
from ldmkit.models.folder import save_components
from ldmkit.models.presets import build_components


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model(path: Path, *, with_clip: bool) -> Path:
    """A random tiny model folder, with a random 16-dim dual encoder in clip/ when asked."""
    components = build_components("tiny", seed=0)
    save_components(components, path)
    if with_clip:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            dual = DualEncoder(DualEncoderConfig(embed_dim=16, image_channels=(8, 16)), components.text_encoder)
        save_dual_encoder(dual, path)
    return path


def shapes_data(path: Path) -> Path:
    """400 shapes at 32 px: about 20 test images, enough for two real halves of 10."""
    build_dataset("shapes", path, n=400, seed=0, size=32)
    return path


def long_caption_data(path: Path, long_words: int = 120) -> Path:
    """An imagefolder of 12 flat-colour images; every third image (0, 3, 6, 9) has a caption past 77 tokens."""
    (path / "images").mkdir(parents=True)
    rows = []
    for i in range(12):
        Image.new("RGB", (32, 32), (20 * i, 255 - 20 * i, 100)).save(path / "images" / f"{i:02d}.png")
        text = f"colour number {i}" + (" very" * long_words if i % 3 == 0 else "")
        rows.append(json.dumps({"file_name": f"images/{i:02d}.png", "text": text}))
    (path / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return path
