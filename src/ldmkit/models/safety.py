"""Checkpoint safety: nothing ldmkit loads may run code.

- Pickle weight files (.ckpt .pt .pth .bin) are refused unless the user passes `--allow-pickle`,
  and even then are read only with `torch.load(weights_only=True)`, which refuses any object
  that is not a tensor or a plain container.
- A model folder holding any `.py` file, naming a class outside `ALLOWED_CLASSES` in
  model_index.json, or carrying a custom-code `auto_map` in a config is refused.
- Every `.safetensors` header is validated before the library that reads it sees the file.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError, UnsafeFileError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# model_index.json entries ldmkit will instantiate: component -> allowed (library, class) pairs.
ALLOWED_CLASSES: dict[str, set[tuple[str, str]]] = {
    "unet": {("diffusers", "UNet2DConditionModel")},
    "vae": {("diffusers", "AutoencoderKL")},
    "text_encoder": {("transformers", "CLIPTextModel"), ("transformers", "BertModel")},
    "tokenizer": {
        ("transformers", n) for n in ("CLIPTokenizer", "CLIPTokenizerFast", "BertTokenizer", "BertTokenizerFast")
    },
    "scheduler": {
        ("diffusers", n)
        for n in (
            "PNDMScheduler",
            "DDIMScheduler",
            "DDPMScheduler",
            "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "LMSDiscreteScheduler",
            "DPMSolverMultistepScheduler",
            "DPMSolverSinglestepScheduler",
            "HeunDiscreteScheduler",
            "UniPCMultistepScheduler",
            "DEISMultistepScheduler",
            "KDPM2DiscreteScheduler",
            "KDPM2AncestralDiscreteScheduler",
        )
    },
}
# Components that may be present but are never loaded (a null entry is always fine).
IGNORED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder", "clip")
ALLOWED_PIPELINES = ("StableDiffusionPipeline",)

# bytes per element for every dtype the safetensors format defines
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _bad(path: Path, what: str) -> ModelFolderError:
    return ModelFolderError(f"{path}: not a valid safetensors file: {what}")


def check_safetensors_header(path: Path) -> dict[str, Any]:
    """Validate a .safetensors file's header against its size; returns the parsed header.

    Checks: the 8-byte length is within the file and the 100 MB header limit, the header is a JSON
    object, each tensor has a known dtype, a non-negative integer shape and offsets whose span equals
    dtype size x element count, lies inside the data area, and overlaps no other tensor.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"file is {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER_BYTES or n > size - 8:
            raise _bad(path, f"header length {n} does not fit in a file of {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(path, f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    data_bytes = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        spans.append((*_tensor_span(path, name, info, data_bytes), name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise _bad(path, f"tensors {a!r} and {b!r} overlap")
    return header


def _tensor_span(path: Path, name: str, info: Any, data_bytes: int) -> tuple[int, int]:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise _bad(path, f"tensor {name!r} lacks dtype/shape/data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        raise _bad(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    ints = shape + offsets if isinstance(shape, list) and isinstance(offsets, list) else None
    if ints is None or len(offsets) != 2 or not all(type(v) is int and v >= 0 for v in ints):
        raise _bad(path, f"tensor {name!r} has malformed shape {shape!r} or offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * _DTYPE_BYTES[dtype]
    if end - begin != expected:
        raise _bad(path, f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes, offsets give {end - begin}")
    if end > data_bytes:
        raise _bad(path, f"tensor {name!r} ends at byte {end} past the data area of {data_bytes} bytes")
    return begin, end


def load_pickle_weights(path: Path, *, allow_pickle: bool) -> dict[str, Any]:
    """State dict from a pickle file, read with torch.load(weights_only=True) and only when allowed."""
    import pickle

    import torch

    path = Path(path)
    if not allow_pickle:
        err = UnsafeFileError(
            f"{path} is a pickle file ({path.suffix}), and loading pickles can run arbitrary code; convert the model "
            "to safetensors once with `ldmkit model convert MODEL --allow-pickle --out NEW` (tensors only, read "
            "with torch.load(weights_only=True))"
        )
        err.flag_hint = ("--allow-pickle", "or pass --allow-pickle to this command to read it the same way")
        raise err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeFileError(
            f"{path} holds objects other than tensors, refused even with pickles allowed "
            f"(torch.load weights_only=True said: {first})"
        ) from None
    if not isinstance(state, dict):
        raise ModelFolderError(f"{path} holds a {type(state).__name__}, expected a dict of tensors")
    return state


def check_weight_files(folder: Path, *, allow_pickle: bool) -> list[Path]:
    """Validate the weight files under `folder` (recursively) that can be loaded; returns them, safetensors first.

    A pickle in a directory that also holds a .safetensors file is skipped, never opened: hub snapshots
    carry `pytorch_model.bin` beside `model.safetensors`, and every loader here reads safetensors when
    they exist. Other pickles are gated by `load_pickle_weights` (refused, or read once with
    weights_only=True so the library that loads them afterwards only ever sees plain tensors).
    """
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    safe = [p for p in files if p.suffix == ".safetensors"]
    with_safetensors = {p.parent for p in safe}
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES and p.parent not in with_safetensors]
    for p in safe:
        check_safetensors_header(p)
    for p in pickles:
        load_pickle_weights(p, allow_pickle=allow_pickle)
    return safe + pickles


def check_no_code(folder: Path) -> None:
    """Refuse a folder holding Python files or configs that ask for custom code (`auto_map`)."""
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if p.suffix in (".py", ".pyc", ".pyw", ".so") and p.is_file():
            raise UnsafeFileError(
                f"{p}: model folders may not contain code files; ldmkit never runs code shipped with a model"
            )
        if p.suffix == ".json" and p.is_file():
            code_keys = _code_keys(p)
            if code_keys:
                raise UnsafeFileError(
                    f"{p} asks for custom code ({', '.join(code_keys)}); ldmkit loads only built-in classes"
                )


_CODE_KEYS = ("auto_map", "custom_pipeline")
_PARSE_LIMIT = 1_000_000  # JSON files up to this size are parsed; larger ones (vocabularies) are scanned


def _code_keys(path: Path) -> list[str]:
    """The custom-code keys a JSON file sets at its top level, for files of ANY size (issue 13).

    Small files are parsed. A large one (a tokenizer vocabulary) is scanned in blocks for the quoted key
    names without being parsed; if one occurs it counts as a request for code unless the file is small
    enough to parse and the key turns out not to be top-level.
    """
    if path.stat().st_size > _PARSE_LIMIT:
        needles = [f'"{k}"'.encode() for k in _CODE_KEYS]
        found, tail = set(), b""
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                window = tail + block
                found.update(k for k, n in zip(_CODE_KEYS, needles) if n in window)
                tail = window[-32:]
        if not found or path.stat().st_size > 64 * _PARSE_LIMIT:
            return sorted(found)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []  # not a config; the loader that needs it reports it
    return sorted(set(_CODE_KEYS) & set(config)) if isinstance(config, dict) else []


def check_model_index(index: dict[str, Any], path: Path) -> dict[str, tuple[str, str]]:
    """Check model_index.json against the allowlist; returns component -> (library, class) to load."""
    pipeline = index.get("_class_name")
    if pipeline not in ALLOWED_PIPELINES:
        raise UnsafeFileError(
            f"{path}: _class_name {pipeline!r} is not allowed; allowed: {', '.join(ALLOWED_PIPELINES)}"
        )
    chosen = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue
        if len(entry) != 2:
            raise ModelFolderError(f"{path}: entry {name!r} should be [library, class], got {entry!r}")
        if entry == [None, None] or name in IGNORED_COMPONENTS:
            continue
        allowed = ALLOWED_CLASSES.get(name)
        if allowed is None or tuple(entry) not in allowed:
            allowed_text = ", ".join(sorted(f"{lib}.{cls}" for lib, cls in allowed or ())) or "nothing"
            raise UnsafeFileError(f"{path}: component {name!r} names {entry!r}; allowed: {allowed_text}")
        chosen[name] = (entry[0], entry[1])
    missing = [n for n in ALLOWED_CLASSES if n not in chosen]
    if missing:
        raise ModelFolderError(f"{path}: model_index.json has no entry for {', '.join(missing)}")
    return chosen
