"""`ldmkit model compose`: a new model folder made of one folder's UNet, VAE and scheduler and another text
encoder + tokenizer (seeds 001/003: "integrated fine-tuned CLIP with pre-trained VAE and U-Net").

    report = compose_text_encoder("sd15/", "runs/clip-ft", "sd15-clip-ft/")

The text encoder may come from a transformers CLIPModel folder (its text tower; the projections are not part
of Stable Diffusion's conditioning), a CLIPTextModel folder (tokenizer files beside it or in ../tokenizer/), a
model folder (its text_encoder/ + tokenizer/), or a `train clip` run / its final/ folder (the fine-tuned text
tower). Its hidden size must equal the UNet's cross_attention_dim. Everything else of the base folder is
copied byte for byte; the result is written to a temporary sibling and renamed, so a failure leaves no --out.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError, UsageError

REPLACED = ("text_encoder", "tokenizer")


@dataclass(frozen=True)
class ComposeReport:
    """What `compose_text_encoder` wrote."""

    out: Path
    """The new model folder."""
    source: str
    """What the text encoder was taken from, in words."""
    hidden_size: int
    """Width of the new text encoder's states (= the UNet's cross_attention_dim)."""
    dropped: tuple[str, ...]
    """Base folders not copied because they depended on the replaced text encoder (e.g. clip/)."""


def _from_clip_model(folder: Path):
    """The text tower of the CLIPModel in `folder` as a CLIPTextModel + its tokenizer (weights copied exactly)."""
    from ldmkit.models.hf_clip import load_hf_clip

    return load_hf_clip(folder).text_encoder  # its model is the CLIPModel's text_model, a CLIPTextModel


def _from_dual_encoder(clip: Path, given: Path):
    """The fine-tuned text tower of the dual encoder in the folder `clip` (a model folder's clip/)."""
    from ldmkit.models.folder import load_text_encoder
    from ldmkit.models.hf_clip import is_hf_clip_folder

    if is_hf_clip_folder(clip):
        return _from_clip_model(clip), f"the fine-tuned CLIPModel text tower of {given}"
    if (clip / "text_encoder").is_dir():
        return load_text_encoder(clip), f"the tuned text tower of the dual encoder in {given}"
    raise UsageError(f"the dual encoder in {given} did not train its text tower (clip.tune_text was false): there "
                     "is no fine-tuned text encoder in it; pass a CLIPModel, CLIPTextModel or model folder")


def resolve_text_encoder(path: str | Path):
    """(TextEncoder, description) of what `--text-encoder PATH` names; see the module docstring."""
    from ldmkit.models.folder import _text_encoder_from, load_text_encoder
    from ldmkit.models.hf_clip import TOKENIZER_FILES, is_hf_clip_folder, read_config

    given = path = Path(path)
    if not path.is_dir():
        raise UsageError(f"--text-encoder {path} is not a folder")
    if not (path / "clip").is_dir() and (path / "final" / "clip").is_dir():
        path = path / "final"  # a `train clip` run folder
    if (path / "clip").is_dir() and not (path / "text_encoder").is_dir():
        return _from_dual_encoder(path / "clip", given)
    if is_hf_clip_folder(path):
        return _from_clip_model(path), f"the text tower of the CLIPModel in {given}"
    if "text_tuned" in (read_config(path) or {}):  # ldmkit's own dual encoder folder (a clip/ given directly)
        return _from_dual_encoder(path, given)
    model_type = (read_config(path) or {}).get("model_type")
    if model_type in ("clip_text_model", "bert"):
        has_tokenizer = any((path / name).is_file() for name in (*TOKENIZER_FILES, "vocab.txt"))
        if not has_tokenizer and (path.parent / "tokenizer").is_dir():  # a model folder's text_encoder/
            return _text_encoder_from(path, path.parent / "tokenizer", allow_pickle=False, dtype=None), \
                f"the text encoder in {given} (tokenizer from {path.parent / 'tokenizer'})"
        if not has_tokenizer:
            raise UsageError(f"--text-encoder {given}: no tokenizer files beside the text model (and no "
                             "../tokenizer/); save the tokenizer into that folder")
        return load_text_encoder(path), f"the {model_type} in {given}"
    if (path / "text_encoder").is_dir():
        return load_text_encoder(path), f"the text encoder of the model folder {given}"
    raise UsageError(f"--text-encoder {given} is none of: a CLIPModel or CLIPTextModel folder (config.json + "
                     "model.safetensors + tokenizer files), a model folder with text_encoder/, a `train clip` run")


def _cross_attention_dim(base: Path) -> int:
    from ldmkit.models.folder import _read_json

    value = _read_json(base / "unet" / "config.json").get("cross_attention_dim")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFolderError(f"{base / 'unet' / 'config.json'}: cross_attention_dim {value!r} is not one integer")
    return value


def _depends_on_text_encoder(clip: Path) -> bool:
    """Whether a clip/ folder is ldmkit's own dual encoder reading its model folder's (frozen) text encoder."""
    from ldmkit.models.hf_clip import read_config

    config = read_config(clip) or {}
    return config.get("model_type") != "clip" and not config.get("text_tuned", False)


def clip_reading_text_encoder(folder: Path) -> tuple[str, ...]:
    """("clip",) when folder's clip/ is ldmkit's own dual encoder on the folder's frozen text encoder: its projection
    was trained on that encoder's states, so a folder whose text encoder changes must not keep it; else ()."""
    return ("clip",) if (folder / "clip").is_dir() and _depends_on_text_encoder(folder / "clip") else ()


def compose_text_encoder(base: str | Path, text_source: str | Path, out: str | Path) -> ComposeReport:
    """Write `out`: `base` with its text_encoder/ and tokenizer/ replaced by `text_source`'s; see the module doc."""
    from ldmkit.models.folder import META_FILE, _read_json, check_layout, model_hash

    base, out = Path(base), Path(out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; `model compose` writes a new folder and never overwrites")
    if not base.is_dir():
        raise UsageError(f"--from {base} is not a model folder")
    check_layout(base)
    cross = _cross_attention_dim(base)
    text, source = resolve_text_encoder(text_source)
    if text.hidden_size != cross:
        raise UsageError(f"hidden sizes differ: the text encoder ({source}) gives {text.hidden_size}-wide states, but "
                         f"the UNet of {base} cross-attends to {cross} (cross_attention_dim); they must be equal")
    limit = getattr(text.model.config, "max_position_embeddings", None)
    if limit and int(text.tokenizer.model_max_length) > int(limit):  # prompts are padded to this length
        text.tokenizer.model_max_length = int(limit)
    dropped = clip_reading_text_encoder(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.compose-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a killed earlier call
    try:
        shutil.copytree(base, tmp, ignore=lambda folder, names: [n for n in names if Path(folder) == base
                                                                 and n in REPLACED + dropped])
        text.model.save_pretrained(tmp / "text_encoder")  # transformers 5 writes safetensors only
        text.tokenizer.save_pretrained(tmp / "tokenizer")
        index = _read_json(tmp / "model_index.json")
        index["text_encoder"] = ["transformers", type(text.model).__name__]
        index["tokenizer"] = ["transformers", type(text.tokenizer).__name__]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        meta = _read_json(tmp / META_FILE) if (tmp / META_FILE).is_file() else {}
        meta = _provenance(meta, base, model_hash(base), text_source, source, text, _read_json(
            base / "text_encoder" / "config.json"), dropped)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ComposeReport(out=out, source=source, hidden_size=text.hidden_size, dropped=dropped)


def _provenance(meta: dict[str, Any], base: Path, base_hash: str, text_source, source: str, text,
                old: dict[str, Any], dropped: tuple[str, ...]) -> dict[str, Any]:
    """ldmkit.json of the composed folder: the base's record plus where each part came from."""
    record = {
        "base": str(base.resolve()), "base_hash": base_hash,
        "text_encoder_from": str(Path(text_source).resolve()), "text_encoder_source": source,
        "text_encoder": {"class": type(text.model).__name__, "kind": text.kind, "hidden_size": text.hidden_size,
                         "max_length": text.max_length},
        "replaced_text_encoder": {"architectures": old.get("architectures"), "model_type": old.get("model_type"),
                                  "hidden_size": old.get("hidden_size")},
        "dropped": [f"{name}/ (read the replaced text encoder)" for name in dropped],
    }
    meta = {**meta, "composed": record}
    if "text_encoder" in meta:
        meta["text_encoder"] = text.kind
    return meta
