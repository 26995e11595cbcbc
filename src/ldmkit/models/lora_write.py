"""LoRA files written and merged: kohya format (what A1111/ComfyUI read) or PEFT as diffusers saves it.

Reading, checking and resolving against a model: ldmkit.models.lora_files.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError, shown
from ldmkit.models.lora_files import ALPHA_FOLDED, MAX_RANK, LoraFile, LoraLayer, file_key, flat_name

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
"""The file name diffusers' save_lora_weights writes and load_lora_weights(folder) looks for (fmt="peft")."""


# -- writing -------------------------------------------------------------------------------------------------------


def lora_metadata(*, rank: int, alpha: float, base_model_hash: str = "", trigger_words: tuple[str, ...] = (),
                  data_card: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    """String metadata for a kohya-format file: sd-scripts' ss_* keys A1111/ComfyUI show, plus ldmkit's own."""
    meta = {
        "ss_network_module": "networks.lora", "ss_network_dim": str(int(rank)), "ss_network_alpha": f"{alpha:g}",
        "ldmkit_format": "lora", "ldmkit_base_model_hash": base_model_hash,
        "ldmkit_trigger_words": json.dumps(list(trigger_words)), "ldmkit_data_card": data_card,
    }  # fmt: skip
    return {**meta, **(extra or {})}


def save_lora(layers: dict[tuple[str, str], LoraLayer], path: str | Path, *, fmt: str = "kohya",
              metadata: dict[str, str] | None = None, dtype: Any = None, overwrite: bool = False) -> Path:
    """Write layers as a safetensors LoRA file: kohya (`.alpha` always written, alpha kept as fp32) or PEFT as
    diffusers saves it (names must be dotted module paths, e.g. from `resolve`; alpha / rank folded into `lora_B`,
    since diffusers then assumes alpha = rank, and marked so for ldmkit's reader). Weights in `dtype` (fp16 by
    default). Empty metadata values are left out. Written to a temp file, then renamed."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    dtype = dtype or torch.float16
    if fmt not in ("kohya", "peft"):
        raise UsageError(f"LoRA output format must be kohya or peft, got {shown(fmt)}")
    if path.suffix != ".safetensors":
        raise UsageError(f"{path}: a LoRA file is written as .safetensors")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; not overwriting it")
    if not layers:
        raise UsageError("no LoRA layers to write")
    tensors: dict[str, Any] = {}
    for (part, name), layer in sorted(layers.items()):
        if fmt == "kohya":
            key = file_key("kohya", part, name)
            tensors[f"{key}.lora_down.weight"] = layer.down.detach().to(dtype).contiguous()
            tensors[f"{key}.lora_up.weight"] = layer.up.detach().to(dtype).contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(layer.alpha, dtype=torch.float32)
        else:
            tensors[f"{part}.{name}.lora_A.weight"] = layer.down.detach().to(dtype).contiguous()
            tensors[f"{part}.{name}.lora_B.weight"] = (layer.up.detach().float() * layer.scale).to(dtype).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        meta = {k: v for k, v in (metadata or {}).items() if v != ""}
        if fmt == "peft":
            meta[ALPHA_FOLDED] = "1"
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- merging ---------------------------------------------------------------------------------------------------------


def merge_loras(files: list[tuple[LoraFile, float]]) -> dict[tuple[str, str], LoraLayer]:
    """One set of layers equal to applying every file with its scale: per module the ranks are concatenated
    (down stacked, up stacked with scale * alpha / rank folded in, alpha = total rank), so it is exact."""
    import torch

    grouped: dict[tuple[str, str], list[tuple[LoraLayer, float, str]]] = {}
    for lora, scale in files:
        if not math.isfinite(scale):
            raise UsageError(f"{lora.source}: scale {scale} is not finite")
        for (part, name), layer in lora.layers.items():
            flat = flat_name(re.sub(r"^text_model[._]", "", name) if part.startswith("text_encoder") else name)
            grouped.setdefault((part, flat), []).append((layer, scale, name))
    out: dict[tuple[str, str], LoraLayer] = {}
    for (part, flat), entries in grouped.items():
        names = {n for _, _, n in entries}
        name = names.pop() if len(names) == 1 else flat
        four_d = any(layer.down.dim() == 4 for layer, _, _ in entries)
        downs, ups = [], []
        for layer, scale, _ in entries:
            down, up = layer.down.float(), layer.up.float() * (scale * layer.scale)
            if four_d and down.dim() == 2:
                down, up = down[:, :, None, None], up[:, :, None, None]
            downs.append(down)
            ups.append(up)
        if len({tuple(d.shape[1:]) for d in downs}) > 1 or len({u.shape[0] for u in ups}) > 1:
            raise UsageError(f"{part} {name}: the files' layers for it have different shapes; not the same base model")
        rank = sum(d.shape[0] for d in downs)
        if rank > MAX_RANK:
            raise UsageError(f"{part} {name}: merged rank {rank} exceeds {MAX_RANK}")
        out[(part, name)] = LoraLayer(torch.cat(downs, 0), torch.cat(ups, 1), float(rank))
    return out
