"""Dual-encoder features of images and captions, as the float64 arrays the metrics take.

    dual = find_dual_encoder(model_dir, clip_path)        # None when the model folder has no clip/
    images = image_embeddings(dual, pil_images)           # (n, embed_dim), unit rows
    texts = text_embeddings(dual, captions)
    long = long_captions(dual, captions)                  # captions the text encoder truncates
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldmkit.errors import ModelFolderError

BATCH = 64  # images encoded at once; the image tower is small, this only bounds memory


def find_dual_encoder(model_dir: Path, clip_path: Path | None):
    """The dual encoder of `clip_path` if given (an error when it holds none), else the model folder's
    clip/ if present, else None (the caller skips embedding metrics and says so)."""
    from ldmkit.models.dual_encoder import CLIP_FOLDER, load_dual_encoder

    return find_component(model_dir, clip_path, option="--clip", folder=CLIP_FOLDER, load=load_dual_encoder)


def find_component(model_dir: Path, given: Path | None, *, option: str, folder: str, load):
    """load(given) when the user named a path with `option` (ModelFolderError when it does not exist), else
    load(model_dir) when MODEL/`folder`/ exists, else None: how evaluation finds its optional scorers."""
    if given is not None:
        if not Path(given).exists():
            raise ModelFolderError(f"{option} {given} does not exist")
        return load(given)
    if (Path(model_dir) / folder).is_dir():
        return load(model_dir)
    return None


def image_embeddings(dual, images: Sequence) -> np.ndarray:
    """(len(images), embed_dim) float64 L2-normalised embeddings of PIL images."""
    import torch

    from ldmkit.data.images import to_pixels

    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            pixels = torch.cat([to_pixels(image) for image in images[start:start + BATCH]])
            chunks.append(dual.encode_images(pixels).double().cpu().numpy())
    return np.concatenate(chunks)


def text_embeddings(dual, texts: Sequence[str]) -> np.ndarray:
    """(len(texts), embed_dim) float64 L2-normalised embeddings of captions (truncated as the encoder does)."""
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), BATCH):
            chunks.append(dual.encode_texts(list(texts[start:start + BATCH])).double().cpu().numpy())
    return np.concatenate(chunks)


def long_captions(dual, texts: Sequence[str]) -> list[str]:
    """The distinct captions longer than the dual encoder's text limit (their tail is not seen)."""
    encoder = dual.text_encoder
    return [text for text in dict.fromkeys(texts) if encoder.dropped_tokens(text) > 0]


def text_limit(dual) -> int:
    """Tokens the dual encoder's text tower reads per caption."""
    return int(dual.text_encoder.max_length)
