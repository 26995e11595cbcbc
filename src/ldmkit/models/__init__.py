"""ldmkit.models: build, load and save UNet/VAE/text-encoder components; checkpoint safety.

Names are imported lazily (torch and diffusers load only when a model is actually touched).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Components": "ldmkit.models.components",
    "ModelPreset": "ldmkit.models.presets",
    "PRESETS": "ldmkit.models.presets",
    "build_components": "ldmkit.models.presets",
    "get_preset": "ldmkit.models.presets",
    "TextEncoder": "ldmkit.models.text",
    "save_components": "ldmkit.models.folder",
    "load_components": "ldmkit.models.folder",
    "model_hash": "ldmkit.models.folder",
    "load_single_file": "ldmkit.models.single_file",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ldmkit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
