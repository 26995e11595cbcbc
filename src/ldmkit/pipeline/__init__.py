"""Inference: composing components with the diffusion core (txt2img, img2img, trajectories, output)."""

from ldmkit.pipeline.txt2img import GenerationParams, GenerationResult, Pipeline

__all__ = ["Pipeline", "GenerationParams", "GenerationResult"]
