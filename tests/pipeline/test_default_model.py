"""The model shipped in the package (src/ldmkit/default_model, issue 6) generates through the CLI path:
one 64x64 PNG, the same bytes twice in a process and in a fresh process, and on the platform it was
shipped from, the PNG hash `ldmkit model ship` recorded in its ldmkit.json.

PNG bytes depend on the thread count (CPU kernels split their sums by thread), so runs that compare
across processes or with the recorded hash use one thread, as the ship command does.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.cli.generate import default_model_dir
from ldmkit.pipeline.reference import reference_png_sha256

MODEL = default_model_dir()


def test_the_default_model_ships_in_the_package():
    """Issue 6: the package holds a trained model, fp16 safetensors, <= 60 MB, with its record."""
    assert (MODEL / "model_index.json").is_file(), f"no default model in {MODEL}"
    weights = list(MODEL.rglob("*.safetensors"))
    assert weights and sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) <= 60_000_000
    record = json.loads((MODEL / "ldmkit.json").read_text())
    assert record["shipped"]["total_bytes"] <= 60_000_000 and record.get("metrics")


@pytest.fixture(scope="module")
def reference():
    """The prompt and seed `ldmkit model ship` generated its reference PNG with, and the recorded hashes."""
    return json.loads((MODEL / "ldmkit.json").read_text())["reference_image"]


def _generate(out, prompt: str, seed: int, *extra: str) -> bytes:
    assert main(["generate", prompt, "--seed", str(seed), "-o", str(out), "--quiet", *extra]) == 0
    (png,) = out.glob("*.png")
    return png.read_bytes()


def test_one_64x64_png_and_the_same_bytes_twice_in_a_process(reference, tmp_path):
    first = _generate(tmp_path / "a", reference["prompt"], reference["seed"], "--threads", "1")
    second = _generate(tmp_path / "b", reference["prompt"], reference["seed"], "--threads", "1")
    (png,) = (tmp_path / "a").glob("*.png")
    assert Image.open(png).size == (64, 64)
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_a_fresh_process_writes_the_same_bytes(reference, tmp_path):
    in_process = reference_png_sha256(None, reference["prompt"], reference["seed"])  # one thread
    cmd = [sys.executable, "-m", "ldmkit", "generate", reference["prompt"], "--seed", str(reference["seed"]),
           "--threads", "1", "-o", str(tmp_path), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    (png,) = tmp_path.glob("*.png")
    assert hashlib.sha256(png.read_bytes()).hexdigest() == in_process


def test_the_png_hash_recorded_when_shipping_matches_on_its_platform(reference):
    from ldmkit.models.shipping import platform_key

    recorded = reference["sha256"].get(platform_key())
    if recorded is None:
        pytest.skip(f"no reference hash for {platform_key()} (recorded: {', '.join(reference['sha256']) or 'none'}); "
                    "the determinism tests above still ran")
    assert reference_png_sha256(None, reference["prompt"], reference["seed"]) == recorded
