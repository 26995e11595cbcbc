"""Inference: composing components with the diffusion core (txt2img, img2img, trajectories, output).

`SamplingSettings` (the typed request) imports without torch; `Pipeline` and its result types load
torch on first use, so the CLI can check a request before anything heavy is imported.
"""

from ldmkit.pipeline.settings import SamplingSettings

_LAZY = ("Pipeline", "GenerationParams", "GenerationResult")


def __getattr__(name: str):
    if name in _LAZY:
        from ldmkit.pipeline import txt2img

        return getattr(txt2img, name)
    raise AttributeError(f"module 'ldmkit.pipeline' has no attribute {name!r}")


__all__ = ["Pipeline", "GenerationParams", "GenerationResult", "SamplingSettings"]
