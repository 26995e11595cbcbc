"""The parts of a model that `ldmkit.models.shipping` ships: where they are, and how each is copied.

    parts = find_source_parts(Path("runs/default"))   # a model folder, or a multi-stage run folder
    copy_component(parts.model / "unet", tmp / "unet")  # *.safetensors as float16, the rest as is

The text encoder ships by reference when it is exactly the installed MiniLM (`is_packaged_minilm`);
a frozen-text dual encoder must have been trained on the shipped model's own text encoder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError
from ldmkit.models.folder import PACKAGED_REF, load_text_encoder, packaged_reference


# -- is the source text encoder the packaged MiniLM? ---------------------------------------------


def _state_dict(model_dir: Path) -> dict[str, Any]:
    return load_text_encoder(model_dir).model.state_dict()


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def is_packaged_minilm(model_folder: Path) -> bool:
    """Whether `model_folder`'s text_encoder/ holds exactly the packaged MiniLM's weights."""
    import torch

    from ldmkit.models.text import minilm_text_encoder

    folder = Path(model_folder)
    if (folder / "text_encoder" / PACKAGED_REF).is_file():
        return True
    config = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        return False
    with torch.no_grad():
        return _same_state(_state_dict(folder), minilm_text_encoder().model.state_dict())


# -- copying with fp16 weights --------------------------------------------------------------------


def to_fp16_safetensors(src: Path, dst: Path) -> None:
    """Copy a .safetensors file with every floating tensor stored as float16 (metadata kept)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ldmkit.models.safety import check_safetensors_header

    check_safetensors_header(src)
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    out = {}
    for key, t in load_file(str(src)).items():
        if t.is_floating_point() and t.dtype != torch.float16:
            half = t.to(torch.float16)
            if not torch.isfinite(half).all() and torch.isfinite(t).all():
                raise UsageError(f"{src}: tensor {key!r} (max |x| {t.abs().max().item():.4g}) overflows float16 "
                                 "(largest 65504); it cannot be shipped as fp16")
            t = half
        out[key] = t.contiguous()
    save_file(out, str(dst), metadata=metadata)


def copy_component(src: Path, dst: Path) -> None:
    """Copy a component folder: *.safetensors as fp16, its config.json without `_name_or_path` (the path diffusers
    records of the build machine's folder), other files as they are; code and pickles refused."""
    from ldmkit.models.safety import PICKLE_SUFFIXES, check_no_code

    check_no_code(src)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix in PICKLE_SUFFIXES:
            raise UsageError(f"{f} is a pickle weight file; only .safetensors can be shipped (convert it first)")
        if f.suffix == ".safetensors":
            to_fp16_safetensors(f, target)
        elif f == src / "config.json":
            config = json.loads(f.read_text(encoding="utf-8"))
            config.pop("_name_or_path", None)
            target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(f, target)
    for index in dst.rglob("*.safetensors.index.json"):  # sharded weights: the recorded size halved
        data = json.loads(index.read_text(encoding="utf-8"))
        files = {dst / index.parent.relative_to(dst) / n for n in data.get("weight_map", {}).values()}
        data.setdefault("metadata", {})["total_size"] = sum(p.stat().st_size for p in files if p.is_file())
        index.write_text(json.dumps(data, indent=2) + "\n")


def ship_text_encoder(model: Path, tmp: Path) -> str:
    if is_packaged_minilm(model):
        (tmp / "text_encoder").mkdir()
        shutil.copyfile(model / "text_encoder" / "config.json", tmp / "text_encoder" / "config.json")
        (tmp / "text_encoder" / PACKAGED_REF).write_text(json.dumps(packaged_reference(), indent=2) + "\n")
        return "packaged MiniLM (by reference)"
    copy_component(model / "text_encoder", tmp / "text_encoder")
    return "copied (fp16)"


def _clip_source(clip: Path) -> Path:
    """The folder holding clip/config.json (a model folder's clip/, or the clip folder itself)."""
    folder = clip / "clip" if (clip / "clip").is_dir() else clip
    if not (folder / "config.json").is_file():
        raise UsageError(f"--clip {clip}: no dual encoder there (expected clip/config.json)")
    return folder


def ship_clip(clip: Path, model: Path, tmp: Path) -> None:
    """Copy the dual encoder; a frozen text tower must be the shipped model's own text encoder."""
    folder = _clip_source(clip)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    self_contained = config.get("text_tuned", False) or config.get("model_type") == "clip"  # a CLIPModel: both towers
    if not self_contained and folder.parent.resolve() != model.resolve():
        both_packaged = is_packaged_minilm(folder.parent) and is_packaged_minilm(model)
        if not both_packaged and not _same_state(_state_dict(folder.parent), _state_dict(model)):
            raise UsageError(f"the dual encoder in {folder} was trained on {folder.parent}'s text encoder, which "
                             f"differs from the shipped model's ({model}); ship a clip/ trained on the same one")
    copy_component(folder, tmp / "clip")


# -- the source -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceParts:
    """The pieces of a source found on disk."""

    model: Path
    """The model folder (unet/, vae/, text_encoder/, ...)."""
    clip: Path | None
    """Folder holding the dual encoder, if any."""
    attributes: Path | None
    """Folder holding attributes/ (the attribute classifier), if any."""
    cards: tuple[Path, ...]
    """Dataset cards found in a run folder."""
    stage_recipes: dict[str, str]
    """Stage name -> resolved recipe text (config.yaml) of a run folder's stages."""


def _stage_trainer(stage: Path) -> str | None:
    try:
        return json.loads((stage / "trainer.json").read_text(encoding="utf-8")).get("trainer")
    except (OSError, ValueError, AttributeError):
        return None


def find_source_parts(source: Path) -> SourceParts:
    """A model folder as it is, or a multi-stage run: its unet stage's final/, clip and attributes stages, cards."""
    source = Path(source)
    if (source / "model_index.json").is_file():
        clip = source if (source / "clip").is_dir() else None
        return SourceParts(source, clip, source if (source / "attributes").is_dir() else None, (), {})
    if not source.is_dir():
        raise UsageError(f"{source} does not exist or is not a folder")
    stages = {p.name: _stage_trainer(p) for p in sorted(source.iterdir()) if p.is_dir()}
    finals = {name: source / name / "final" for name, kind in stages.items() if kind}
    unets = [n for n, kind in stages.items() if kind == "unet" and (finals[n] / "model_index.json").is_file()]
    if len(unets) != 1:
        raise UsageError(f"{source} is neither a model folder (no model_index.json) nor a run with exactly one "
                         f"finished unet stage (found {unets or 'none'}); pass the model folder itself")
    last = {kind: finals[n] for n, kind in stages.items() if kind in ("clip", "attributes") and (finals[n] / kind).is_dir()}
    recipes = {n: (source / n / "config.yaml").read_text(encoding="utf-8")
               for n in finals if (source / n / "config.yaml").is_file()}
    cards = tuple(sorted(source.glob("*/dataset_card.json")))
    return SourceParts(finals[unets[0]], last.get("clip"), last.get("attributes"), cards, recipes)
