"""Where the default model shipped inside the package lives (`ldmkit generate` without --model).

Kept free of heavy imports: the CLI asks for it before torch is loaded.
"""

from __future__ import annotations

from pathlib import Path


def default_model_dir() -> Path:
    """src/ldmkit/default_model, as installed (a folder that may be missing in a source checkout)."""
    from importlib import resources

    return Path(str(resources.files("ldmkit") / "default_model"))
