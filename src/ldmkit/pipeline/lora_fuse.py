"""`ldmkit lora fuse`: a new model folder with LoRA files fused into its weights (ldmkit.pipeline.lora's `fuse`,
written out by ldmkit.models.merge.write_changed_weights).

    fuse_into_folder("models/base", [(Path("style.safetensors"), 0.8)], "models/base-style")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ldmkit.errors import UsageError
from ldmkit.models.lora_files import target_modules
from ldmkit.pipeline.lora import lora_state


def fuse_into_folder(model_dir: str | Path, loras: list[tuple[Path, float]], out: str | Path) -> dict[str, Any]:
    """A new model folder `out`: `model_dir` with every (LoRA file, scale) fused into its weights, as `fuse` does
    at generation (W += scale * alpha / rank * up @ down, summed in float32), written in each weight file's dtype;
    every file the LoRAs do not touch is copied as it is. `ldmkit generate`, `ldmkit eval` and diffusers then
    load `out` like any model folder (`ldmkit lora fuse`). Returns what ldmkit.json records under fused_loras."""
    from ldmkit.models.compose import clip_reading_text_encoder
    from ldmkit.models.folder import model_hash
    from ldmkit.models.merge import write_changed_weights
    from ldmkit.pipeline import Pipeline

    model_dir, out = Path(model_dir), Path(out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; `lora fuse` writes a new folder and never overwrites")
    if not loras:
        raise UsageError("name at least one LoRA file to fuse")
    if all(scale == 0.0 for _, scale in loras):
        raise UsageError("every LoRA has scale 0: fusing them changes nothing")
    pipe = Pipeline.from_pretrained(model_dir)
    warnings = [w for path, scale in loras for w in pipe.load_lora(path, scale)]
    state = lora_state(pipe)
    touched = list(state.terms)
    state.fuse()
    changed: dict[str, dict[str, torch.Tensor]] = {}
    for part, name in touched:
        changed.setdefault(part, {})[f"{name}.weight"] = target_modules(state.models[part])[name].weight.detach()
    dropped = clip_reading_text_encoder(model_dir) if "text_encoder" in changed else ()
    record = {"model": str(model_dir.resolve()), "model_hash": model_hash(model_dir),
              "loras": [{"file": str(Path(p).resolve()), "scale": s} for p, s in loras],
              "layers": {part: len(values) for part, values in changed.items()}, "warnings": warnings,
              "dropped": [f"{d}/ (read the text encoder the LoRA changed)" for d in dropped]}
    write_changed_weights(model_dir, out, changed, ("fused_loras", record), dropped)
    return record
