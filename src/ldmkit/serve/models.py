"""The served models: found in a folder (`--models-dir`), loaded on demand, the least recently used dropped.

    models = discover(Path("models"))      # {"sd-tiny": models/sd-tiny, "mine": models/mine.safetensors}
    pool = ModelPool(models, max_loaded=2)
    pipe = pool.get("mine")                # loads it; a third model loaded later drops the least recent one

A model is a folder with `model_index.json` (named by the folder) or one `.safetensors` checkpoint (named by
its file stem). Pickle checkpoints are never served (safetensors only), whatever their name.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ldmkit.errors import UsageError

MAX_MODELS = 1000
"""Models one --models-dir may hold (more is refused: a wrong folder, e.g. a whole disk)."""
MAX_LOADED = 64
"""Upper bound of --max-loaded."""
DEFAULT_FIELDS = ("steps", "sampler", "guidance", "guidance_rescale", "width", "height", "timestep_spacing")
"""The sampling defaults of a model that GET /api/v1/capabilities shows (resolved from the model)."""


def discover(models_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """(name -> path of every model in models_dir, sorted by name; names of entries that are not models)."""
    if not models_dir.is_dir():
        raise UsageError(f"--models-dir {models_dir}: not a folder")
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for count, path in enumerate(sorted(models_dir.iterdir())):
        if count >= MAX_MODELS * 10:
            raise UsageError(f"--models-dir {models_dir}: over {MAX_MODELS * 10} entries; point it at a folder "
                             "of models")
        if path.name.startswith("."):
            continue
        if path.is_dir() and (path / "model_index.json").is_file():
            name = path.name
        elif path.is_file() and path.suffix == ".safetensors":
            name = path.stem
        else:
            skipped.append(path.name)
            continue
        if name in found:
            raise UsageError(f"--models-dir {models_dir}: {found[name].name} and {path.name} would both be served "
                             f"as {name!r}; rename one")
        found[name] = path
        if len(found) > MAX_MODELS:
            raise UsageError(f"--models-dir {models_dir}: more than {MAX_MODELS} models")
    if not found:
        raise UsageError(f"--models-dir {models_dir}: no model folder (with model_index.json) or .safetensors file")
    return found, skipped


class ModelPool:
    """Pipelines of the served models, at most `max_loaded` kept; thread-safe (the worker loads, the API checks)."""

    def __init__(self, models: dict[str, Path], *, max_loaded: int = 2, fast: bool = False):
        if isinstance(max_loaded, bool) or not isinstance(max_loaded, int) or not 1 <= max_loaded <= MAX_LOADED:
            raise UsageError(f"--max-loaded must be an integer in 1..{MAX_LOADED}, got {max_loaded!r}")
        self.models, self.max_loaded, self.fast = dict(models), max_loaded, fast
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._defaults: dict[str, dict] = {}
        self._lock = threading.Lock()  # the table only: never held while a model loads
        self._loading = threading.Lock()  # one load at a time

    def get(self, name: str):
        """The pipeline of model `name`, loaded if needed (the least recently used one dropped past max_loaded)."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        with self._loading:
            with self._lock:
                if name in self._loaded:
                    self._loaded.move_to_end(name)
                    return self._loaded[name]
            pipe = self._load(name)
            with self._lock:
                self._loaded[name] = pipe
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            return pipe

    def _load(self, name: str):
        import torch

        from ldmkit.pipeline import Pipeline
        from ldmkit.pipeline.settings import SamplingSettings

        pipe = Pipeline.from_pretrained(self.models[name], unet_dtype=torch.bfloat16 if self.fast else None,
                                        compile=self.fast)
        resolved, _ = pipe.resolve(SamplingSettings())
        defaults = {k: getattr(resolved, k) for k in DEFAULT_FIELDS}
        with self._lock:
            self._defaults[name] = {**defaults, "size_multiple": pipe.factor}
        return pipe

    def loaded(self, name: str):
        """The pipeline of `name` if it is loaded now, else None (never loads)."""
        with self._lock:
            return self._loaded.get(name)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def defaults(self, name: str) -> dict | None:
        """The model's sampling defaults (DEFAULT_FIELDS and size_multiple, the VAE factor) once it has been
        loaded; None before."""
        with self._lock:
            found = self._defaults.get(name)
            return None if found is None else dict(found)

    def check(self, name: str, settings, init_image=None):
        """The model-dependent checks (`Pipeline.resolve`) when the model is loaded: the resolved settings, or
        None when it is not loaded (checked when the job runs). UsageError when they fail. Allocates nothing."""
        pipe = self.loaded(name)
        if pipe is None:
            return None
        return pipe.resolve(settings, init_image)[0]


__all__ = ["discover", "ModelPool", "MAX_MODELS"]
