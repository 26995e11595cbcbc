"""The reference-image hash (ldmkit.pipeline.reference) is the hash of what `ldmkit generate` writes."""

from __future__ import annotations

import hashlib

import torch

from ldmkit.cli import main
from ldmkit.pipeline.reference import reference_png_sha256


def test_reference_hash_is_the_hash_of_the_cli_png_and_threads_are_restored(tmp_path, capsys):
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components

    model = tmp_path / "model"
    save_components(build_components("tiny", seed=0), model)
    assert main(["generate", "a red circle", "--model", str(model), "--seed", "3", "--threads", "1",
                 "-o", str(tmp_path / "out"), "--quiet"]) == 0
    (png,) = (tmp_path / "out").glob("*.png")
    before = torch.get_num_threads()
    assert reference_png_sha256(model, "a red circle", 3) == hashlib.sha256(png.read_bytes()).hexdigest()
    assert reference_png_sha256(model, "a red circle", 4) != hashlib.sha256(png.read_bytes()).hexdigest()
    assert torch.get_num_threads() == before
