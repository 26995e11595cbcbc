"""`ldmkit model merge`: a weighted sum of two model folders' weights (a checkpoint merger, the weight-space
ensemble of a fine-tuned model with the model it started from: WiSE-FT, Wortsman et al. 2022).

    report = merge_models("base/", "finetuned/", "merged/", alpha=0.3)   # unet = 0.7 base + 0.3 finetuned

OUT is a copy of A whose merged parts (default: the UNet) hold (1 - alpha) * A + alpha * B, tensor by tensor,
computed in float32 and stored in A's dtype; every other file is A's, byte for byte. A weighted sum means something
only for two models of one architecture, usually one fine-tuned from the other, so each merged part must hold the
same tensor names and shapes in both folders (file layout, dtype and sharding may differ). A part whose weights
are the same in A and B is refused (merging it would change nothing), and parts kept from A whose weights differ
from B's are reported. Safetensors only (`ldmkit model convert` turns pickles into safetensors); a text encoder
referring to packaged weights (the shipped default model's MiniLM) is read from the installed package, and a
merged one is written out in full. Written to a temporary sibling and renamed, so a failure leaves no OUT.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError, UsageError

PARTS = ("unet", "vae", "text_encoder")
DROPPED_META = ("metrics", "reference_image", "shipped")  # facts about A's weights, untrue of the merge


@dataclass(frozen=True)
class MergeReport:
    """What `merge_models` wrote."""

    out: Path
    """The new model folder."""
    parts: tuple[str, ...]
    """The merged parts."""
    tensors: int
    """How many tensors were merged (integer tensors, equal in both, are copied)."""
    kept_differing: tuple[str, ...]
    """Parts not merged whose weights differ between A and B (OUT has A's)."""
    dropped: tuple[str, ...]
    """A's folders not copied because they read a merged text encoder (e.g. clip/)."""


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files a load of this component folder reads (plain over variants), or the installed
    package's file a packaged_weights.json refers to."""
    from ldmkit.models.folder import MINILM_WEIGHTS, PACKAGED_REF, _weights_kind, packaged_weights_dir, weight_variant

    if (folder / PACKAGED_REF).is_file() and not any(folder.glob("*.safetensors")):
        return [packaged_weights_dir(folder) / MINILM_WEIGHTS]
    safetensors, variant = _weights_kind(folder, allow_pickle=True)
    if not safetensors:
        raise UsageError(f"{folder} holds pickle weights only; `model merge` reads safetensors: convert the model "
                         "with `ldmkit model convert FOLDER --out NEW --allow-pickle` first")
    return sorted(f for f in folder.glob("*.safetensors") if weight_variant(f.name) == variant)


def _tensor_index(folder: Path) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """name -> (file, safetensors dtype, shape) of every tensor of one component folder (headers checked)."""
    from ldmkit.models.safety import check_safetensors_header

    index: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    for file in _weight_files(folder):
        for name, info in check_safetensors_header(file).items():
            if name == "__metadata__" or (name.endswith("position_ids") and info["dtype"].startswith(("I", "U"))):
                continue  # older transformers saved this buffer; it is rebuilt on load, not read
            if name in index:
                raise ModelFolderError(f"{folder}: tensor {name!r} is in both {index[name][0].name} and {file.name}")
            index[name] = (file, info["dtype"], tuple(info["shape"]))
    return index


def _same_architecture(part: str, a: dict, b: dict, a_dir: Path, b_dir: Path) -> None:
    """Refuse two component folders whose tensors differ in names or shapes (one line naming the first)."""
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing or extra:
        name, where = (missing[0], b_dir) if missing else (extra[0], a_dir)
        raise UsageError(f"{part}/ differs in architecture: tensor {name!r} is not in {where / part} "
                         f"({len(missing)} of A's tensors missing from B, {len(extra)} of B's not in A)")
    for name in sorted(a):
        if a[name][2] != b[name][2]:
            raise UsageError(f"{part}/ differs in architecture: tensor {name!r} has shape {list(a[name][2])} in A "
                             f"and {list(b[name][2])} in B")


def _reader(cache: dict, file: Path):
    from safetensors import safe_open

    if file not in cache:
        cache[file] = safe_open(str(file), framework="pt")
    return cache[file]


def _weights_equal(a: dict, b: dict) -> bool:
    """Whether two component folders with the same tensor names and shapes hold the same values."""
    import torch

    cache: dict = {}
    for name in sorted(a):
        x = _reader(cache, a[name][0]).get_tensor(name)
        y = _reader(cache, b[name][0]).get_tensor(name)
        if not torch.equal(x.float() if x.is_floating_point() else x, y.float() if y.is_floating_point() else y):
            return False
    return True


def _differ(a: dict, b: dict) -> bool:
    """Whether two component folders hold different tensors (names, shapes or values)."""
    if set(a) != set(b) or any(a[name][2] != b[name][2] for name in a):
        return True
    return not _weights_equal(a, b)


def _rewrite_part(index: dict, target: Path, value_of) -> int:
    """Write one component folder's tensors into `target`, one file per file of `index` (same names, same
    dtypes): value_of(name, tensor) gives each tensor's new value (float32 or the file's dtype) or None to keep
    it; returns how many were changed."""
    from safetensors.torch import save_file

    cache: dict = {}
    by_file: dict[Path, list[str]] = {}
    for name, (file, _, _) in index.items():
        by_file.setdefault(file, []).append(name)
    changed = 0
    for file, names in sorted(by_file.items()):
        tensors = {}
        for name in sorted(names):
            x = _reader(cache, file).get_tensor(name)
            value = value_of(name, x)
            if value is not None:
                x = value.to(x.dtype)
                changed += 1
            tensors[name] = x.contiguous()
        save_file(tensors, str(target / file.name), metadata={"format": "pt"})
        shutil.copymode(file, target / file.name)  # safetensors writes 0600; keep the source's permissions
    return changed


def _merge_part(a: dict, b: dict, alpha: float, target: Path) -> int:
    """Write (1 - alpha) * A + alpha * B into `target`, one file per file of A (same names, A's dtypes)."""
    import torch

    cache: dict = {}

    def blend(name: str, x):
        y = _reader(cache, b[name][0]).get_tensor(name)
        if x.is_floating_point() != y.is_floating_point() or (not x.is_floating_point() and not torch.equal(x, y)):
            raise UsageError(f"tensor {name!r} is an integer tensor that differs between A and B; a weighted sum "
                             "of it means nothing (are these two models of one architecture?)")
        return (1.0 - alpha) * x.float() + alpha * y.float() if x.is_floating_point() else None

    return _rewrite_part(a, target, blend)


def _write_folder(source: Path, out: Path, parts: dict[str, Any], record: tuple[str, dict], dropped=()) -> int:
    """Copy `source` to a temporary sibling of `out` (without `dropped` folders), rewrite each part's weights with
    parts[part](index, target) -> changed count, record ldmkit.json[record key] = record value (A's facts about its
    own weights dropped), then rename to `out`; a failure leaves no `out`. Returns the tensors changed."""
    from ldmkit.models.folder import META_FILE, PACKAGED_REF, _read_json

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.write-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a killed earlier call
    try:
        shutil.copytree(source, tmp, ignore=lambda folder, names: [n for n in names if Path(folder) == source
                                                                   and n in dropped])
        changed = 0
        for part, write in parts.items():
            target = tmp / part
            index = _tensor_index(source / part)
            for f in [*target.glob("*.safetensors"), target / PACKAGED_REF]:  # rewritten below
                f.unlink(missing_ok=True)
            changed += write(index, target)
        meta = _read_json(source / META_FILE) if (source / META_FILE).is_file() else {}
        meta = {k: v for k, v in meta.items() if k not in DROPPED_META}
        meta[record[0]] = record[1]
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return changed


def write_changed_weights(source: str | Path, out: str | Path, changed: dict[str, dict[str, Any]],
                          record: tuple[str, dict], dropped: tuple[str, ...] = ()) -> int:
    """A new folder `out`: `source` with the tensors `changed[part][name]` replaced (cast to each file's dtype;
    every other file and tensor as it was, except the top-level folders `dropped`) and `record` added to
    ldmkit.json. A name the part's files do not hold is an error. Used by `ldmkit lora fuse`
    (ldmkit.pipeline.lora_fuse)."""
    source, out = Path(source), Path(out)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; a new folder is written and nothing is overwritten")
    for part, values in changed.items():
        if part not in PARTS:
            raise UsageError(f"no weights part {part!r}; parts: {', '.join(PARTS)}")
        missing = sorted(set(values) - set(_tensor_index(source / part)))
        if missing:
            raise ModelFolderError(f"{source / part} holds no tensor {missing[0]!r} to replace")
    writers = {part: (lambda index, target, values=values: _rewrite_part(index, target, lambda name, x: values.get(name)))
               for part, values in changed.items()}
    return _write_folder(source, out, writers, record, dropped)


def _check_request(a: Path, b: Path, out: Path, alpha: float, parts: tuple[str, ...]) -> None:
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; `model merge` writes a new folder and never overwrites")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha must be strictly between 0 and 1 (the weight of B), got {alpha!r}; 0 and 1 would "
                         "copy one folder unchanged")
    if not parts:
        raise UsageError(f"--parts names no part; choose from {', '.join(PARTS)}")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UsageError(f"--parts: unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    if len(set(parts)) != len(parts):
        raise UsageError(f"--parts names a part twice: {','.join(parts)}")
    for label, folder in (("A", a), ("B", b)):
        if not folder.is_dir():
            raise UsageError(f"{label} = {folder} is not a model folder")
    if a.resolve() == b.resolve():
        raise UsageError(f"A and B are the same folder ({a}); a merge of a model with itself is a copy")


def merge_models(a: str | Path, b: str | Path, out: str | Path, *, alpha: float,
                 parts: tuple[str, ...] = ("unet",)) -> MergeReport:
    """Write `out`: `a` with `parts` replaced by (1 - alpha) * A + alpha * B; see the module docstring."""
    from ldmkit.models.compose import clip_reading_text_encoder
    from ldmkit.models.folder import check_layout, model_hash

    a, b, out, parts = Path(a), Path(b), Path(out), tuple(parts)
    _check_request(a, b, out, alpha, parts)
    check_layout(a)
    check_layout(b)
    indexes = {}
    for part in PARTS:  # every part is read (headers only) before any work: layouts, shapes and safety
        ia, ib = _tensor_index(a / part), _tensor_index(b / part)
        if part in parts:
            _same_architecture(part, ia, ib, a, b)
        indexes[part] = (ia, ib)
    same = [p for p in parts if _weights_equal(*indexes[p])]
    if same:
        verb, it = ("holds", "it") if len(same) == 1 else ("hold", "them")
        raise UsageError(f"{', '.join(p + '/' for p in same)} {verb} the same weights in A and B: merging {it} changes "
                         f"nothing; leave {it} out of --parts")
    kept_differing = tuple(p for p in PARTS if p not in parts and _differ(*indexes[p]))
    dropped = clip_reading_text_encoder(a) if "text_encoder" in parts else ()
    record = {"a": str(a.resolve()), "a_hash": model_hash(a), "b": str(b.resolve()), "b_hash": model_hash(b),
              "alpha": alpha, "parts": list(parts), "kept_from_a_differing": list(kept_differing),
              "dropped": [f"{d}/ (read the merged text encoder)" for d in dropped]}
    writers = {part: (lambda index, target, part=part: _merge_part(index, indexes[part][1], alpha, target))
               for part in parts}
    tensors = _write_folder(a, out, writers, ("merged", record), dropped)
    return MergeReport(out=out, parts=parts, tensors=tensors, kept_differing=kept_differing, dropped=dropped)


def describe_report(report: MergeReport, alpha: float, a: Any, b: Any) -> str:
    """The line `ldmkit model merge` prints."""
    kept = (f"; kept A's {', '.join(p + '/' for p in report.kept_differing)} (differs from B's)"
            if report.kept_differing else "")
    dropped = f"; not copied: {', '.join(d + '/' for d in report.dropped)} (it read A's text encoder)" \
        if report.dropped else ""
    return (f"wrote {report.out}: {', '.join(report.parts)} = {1 - alpha:g} x {a} + {alpha:g} x {b} "
            f"({report.tensors} tensors){kept}{dropped}")
