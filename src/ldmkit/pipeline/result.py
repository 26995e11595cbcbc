"""What one generation call returns: the images, the seeds that made them and the parameters behind them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
