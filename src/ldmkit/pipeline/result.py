"""What one generation call returns: the images, the seeds that made them and the parameters behind them."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from ldmkit.pipeline.trajectory import Trajectory


@dataclass(frozen=True)
class GenerationParams:
    """Everything needed to reproduce an image; written into each PNG."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance: float
    guidance_rescale: float
    seed: int
    width: int
    height: int
    strength: float | None = None
    model_hash: str = ""
    model_name: str = ""
    karras: bool = False
    timestep_spacing: str | None = None
    """Only when it differs from the model's scheduler config (so default PNGs stay byte-identical)."""
    loras: tuple[tuple[str, float, str], ...] = ()
    """LoRA files applied: (name = the file's stem, scale, A1111 short hash); PNGs show <lora:NAME:SCALE> tags."""
    embeddings: tuple[tuple[str, str], ...] = ()
    """Textual-inversion embeddings the prompt or negative prompt uses, as the tokenizer reads them: (token, A1111
    short hash), named in PNGs (TI hashes)."""


@dataclass
class GenerationResult:
    """One type for every call: images, the seeds that made them, and optionally the trajectory."""

    images: list[Image.Image]
    seeds: list[int]
    params: GenerationParams
    latents: torch.Tensor
    trajectory: Trajectory | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was decided for the user (e.g. an init image resized to the model's size)."""


def with_adapters(params: GenerationParams, pipe) -> GenerationParams:
    """`params` naming the LoRA files `pipe` has applied and the embeddings it has loaded (issue 16); unchanged
    when there are none."""
    lora_state = getattr(pipe, "_lora_state", None)
    loras = tuple((lora_name(source), float(scale), _lora_hash(source)) for source, scale in
                  (lora_state.loaded if lora_state is not None else ()))
    embeddings = _used_embeddings(pipe, params, getattr(pipe, "_embeddings", None) or ())
    return replace(params, loras=loras, embeddings=embeddings) if loras or embeddings else params


def _used_embeddings(pipe, params: GenerationParams, loaded) -> tuple[tuple[str, str], ...]:
    """(token, short hash) of the loaded embeddings the prompt or negative prompt uses, as A1111 names them. The
    tokenizer decides, not a substring test: CLIP's lowercases the text, so "<ZXQ>" in a prompt uses "<zxq>"."""
    if not loaded:
        return ()
    tokenizer = pipe.text_encoder.tokenizer
    ids = set()
    for text in (params.prompt, params.negative_prompt):
        ids.update(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text or "")))
    return tuple((e.token, e.short_hash) for e in loaded if tokenizer.convert_tokens_to_ids(e.token) in ids)


def lora_name(source: str) -> str:
    """The name a LoRA file has in a prompt tag: its stem without the characters A1111's syntax reserves."""
    return re.sub(r"[:,<>\s]", "", Path(source).stem) or "lora"


def _lora_hash(source: str) -> str:
    path = Path(source)
    try:
        stat = path.stat()
    except OSError:  # built in memory, or moved since it was loaded: named without a hash
        return ""
    return _addnet_hash(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _addnet_hash(path: str, mtime_ns: int, size: int) -> str:
    from ldmkit.models.embeddings import addnet_hash

    return addnet_hash(path)
