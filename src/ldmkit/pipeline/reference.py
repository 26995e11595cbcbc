"""The reference image of a model: the SHA-256 of the PNG that `ldmkit generate PROMPT --seed SEED` writes.

    sha = reference_png_sha256(Path("model/"), "a smiling face", 0)

`ldmkit model ship` and the recipe's ship stage both record it in ldmkit.json (one function, so they agree);
tests/pipeline/test_default_model.py compares a fresh one with the record.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path


def reference_png_sha256(model: Path | None, prompt: str, seed: int) -> str:
    """SHA-256 of the PNG that `ldmkit generate PROMPT [--model MODEL] --seed SEED` writes, on ONE thread.

    Bytes differ between thread counts (CPU kernels split their sums by thread), so the reference is always
    taken on one. `model` None: the default model shipped in the package.
    """
    import torch

    from ldmkit.models.packaged import default_model_dir
    from ldmkit.pipeline.output import save_result
    from ldmkit.pipeline.settings import SamplingSettings
    from ldmkit.pipeline.txt2img import Pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = Pipeline.from_pretrained(default_model_dir() if model is None else Path(model))
        result = pipe(prompt, SamplingSettings(seed=seed), progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            (png,) = save_result(result, Path(tmp))
            return hashlib.sha256(png.read_bytes()).hexdigest()
    finally:
        torch.set_num_threads(before)
