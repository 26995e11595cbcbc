"""Atomic checkpoint folders: write in a temporary folder, fsync, mark COMPLETE, rename; list; prune.

Layout: run_dir/checkpoints/step-00000120/ holding *.safetensors and *.json files and a COMPLETE
marker (JSON: step and the size of every file), written last. A folder counts only when its name
parses, its marker parses and every listed file is there with its recorded size; anything else
(a crash mid-write, a planted file) is ignored. Only .safetensors and .json are ever read: no pickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
REQUIRED = ("state.json", "optimizer.json", "optimizer.safetensors")
READABLE_SUFFIXES = (".json", ".safetensors")
_NAME = re.compile(r"^step-(\d{8,})$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after `step` optimizer steps."""
    return f"step-{step:08d}"


def temporary_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` is assembled before the rename (same filesystem)."""
    return run_dir / CHECKPOINTS / f".partial-{checkpoint_name(step)}"


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (and `root` itself), deepest first."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() or path.is_dir():
            fsync_path(path)
    fsync_path(root)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a safetensors file (shared or strided storage copied first) and fsync it."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    plain = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage().data_ptr()
        if (storage and storage in seen) or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)  # safetensors refuses shared storage
        seen.add(tensor.untyped_storage().data_ptr())
        plain[key] = tensor
    save_file(plain, str(path))
    fsync_path(path)


def write_json(path: Path, data: Any) -> None:
    """Write a JSON file and fsync it."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (the only weight format a run folder is read in)."""
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise ValueError(f"refusing to read {path}: checkpoints are read from .safetensors only")
    return load_file(str(path))


def read_json(path: Path) -> Any:
    """Load a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def seal(tmp: Path, step: int) -> Path:
    """Write the COMPLETE marker last, fsync, and rename `tmp` to its final name. Returns the final path."""
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    write_json(tmp / MARKER, {"step": step, "files": files})
    fsync_path(tmp)
    final = tmp.parent / checkpoint_name(step)
    if final.exists():  # an older, incomplete attempt at this very step (complete ones are not redone)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)
    return final


def is_complete(folder: Path) -> bool:
    """Whether `folder` is a sealed checkpoint whose files are all present with their recorded sizes."""
    match = _NAME.match(folder.name)
    marker = folder / MARKER
    if not match or not folder.is_dir() or not marker.is_file():
        return False
    try:
        info = read_json(marker)
        files = info["files"]
        if int(info["step"]) != int(match.group(1)) or not isinstance(files, dict):
            return False
        if not all(name in files for name in REQUIRED) or not all(name.endswith(READABLE_SUFFIXES) for name in files):
            return False  # not one of ours (e.g. a planted folder): never read from it
        return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint in `run_dir`, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(_NAME.match(p.name).group(1)), p) for p in root.iterdir() if _NAME.match(p.name)]
    return sorted((step, p) for step, p in found if is_complete(p))


def newest_complete(run_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint, or None."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (never touches anything else)."""
    for _, folder in complete_checkpoints(run_dir)[:-keep_last]:
        (folder / MARKER).unlink()  # first un-mark, so a crash mid-delete leaves an ignored folder
        shutil.rmtree(folder)
