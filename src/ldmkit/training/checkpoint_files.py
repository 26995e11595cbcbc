"""Atomic checkpoint folders: write in a temporary folder, fsync, mark COMPLETE, rename; list; prune.

Layout: run_dir/checkpoints/step-00000120/ holding *.safetensors and *.json files and a COMPLETE
marker (JSON: step, the size and the SHA-256 of every file), written last. A folder counts only when its
name parses, its marker parses and every listed file is there with its recorded size; anything else
(a crash mid-write, a planted file) is ignored. Resuming also checks every SHA-256 (`verify`), so a file
damaged without changing its size is noticed; markers written before hashes existed are checked by size.
A checkpoint that does not verify is never deleted or overwritten: it is renamed aside
(step-N.unverified[-k]). Only .safetensors and .json are ever read: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
REQUIRED = ("state.json", "optimizer.json", "optimizer.safetensors")
READABLE_SUFFIXES = (".json", ".safetensors")
UNVERIFIED = ".unverified"  # suffix of a checkpoint folder set aside because it did not verify
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


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(tmp: Path, step: int) -> Path:
    """Write the COMPLETE marker last, fsync, and rename `tmp` to its final name. Returns the final path."""
    names = [p.name for p in sorted(tmp.iterdir()) if p.is_file()]
    write_json(tmp / MARKER, {"step": step, "files": {n: (tmp / n).stat().st_size for n in names},
                              "sha256": {n: file_sha256(tmp / n) for n in names}})
    fsync_path(tmp)
    final = tmp.parent / checkpoint_name(step)
    if final.exists():  # an earlier attempt at this step that does not verify: kept aside, never deleted
        set_aside(final)
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


@dataclass(frozen=True)
class Verdict:
    """What `verify` found in one checkpoint folder."""

    step: int
    """The step its name says."""
    folder: Path
    """The checkpoint folder."""
    problem: str | None
    """Why it cannot be used (None: it verifies)."""
    hashed: bool
    """Whether its marker records SHA-256 hashes (False: written before they existed, checked by size)."""

    @property
    def ok(self) -> bool:
        """Whether the checkpoint can be resumed from."""
        return self.problem is None


def verify(folder: Path) -> Verdict:
    """Check a checkpoint folder fully: marker, every listed file's size and (when recorded) SHA-256."""
    match = _NAME.match(folder.name)
    step = int(match.group(1)) if match else -1
    if not (folder / MARKER).is_file():
        return Verdict(step, folder, f"no {MARKER} marker (never finished)", False)
    if not sealed_by_ldmkit(folder):
        return Verdict(step, folder, f"not an ldmkit checkpoint (its {MARKER} is unreadable or lists other files)",
                       False)
    if not is_complete(folder):
        return Verdict(step, folder, "files missing or of the wrong size", False)
    try:
        hashes = read_json(folder / MARKER).get("sha256")
        if hashes is None:
            return Verdict(step, folder, None, False)
        if not isinstance(hashes, dict) or set(hashes) != set(read_json(folder / MARKER)["files"]):
            return Verdict(step, folder, f"{MARKER} lists hashes for other files than sizes", True)
        for name, expected in sorted(hashes.items()):
            if file_sha256(folder / name) != expected:
                return Verdict(step, folder, f"{name}: SHA-256 differs from {MARKER}", True)
    except (OSError, ValueError, AttributeError) as err:
        return Verdict(step, folder, f"cannot be read ({type(err).__name__})", True)
    return Verdict(step, folder, None, True)


def sealed_by_ldmkit(folder: Path) -> bool:
    """Whether `folder`'s marker is one ldmkit writes (the required files, only .json/.safetensors listed):
    a damaged checkpoint of ours rather than a folder someone else put there (which is never touched)."""
    try:
        files = read_json(folder / MARKER)["files"]
        return (isinstance(files, dict) and all(name in files for name in REQUIRED)
                and all(name.endswith(READABLE_SUFFIXES) for name in files))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def candidate_folders(run_dir: Path) -> list[Path]:
    """Every checkpoint folder whose name parses (complete or not), newest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def survey(run_dir: Path) -> tuple[Verdict | None, list[Verdict]]:
    """(the newest checkpoint that verifies or None, the newer ones that do not), checking newest first."""
    rejected = []
    for folder in candidate_folders(run_dir):
        verdict = verify(folder)
        if verdict.ok:
            return verdict, rejected
        rejected.append(verdict)
    return None, rejected


def set_aside(folder: Path) -> Path:
    """Rename a folder that does not verify to NAME.unverified[-k] (a checkpoint is ignored from then on)."""
    target = folder.with_name(folder.name + UNVERIFIED)
    k = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}{UNVERIFIED}-{k}")
        k += 1
    os.replace(folder, target)
    return target


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (never touches anything else)."""
    for _, folder in complete_checkpoints(run_dir)[:-keep_last]:
        (folder / MARKER).unlink()  # first un-mark, so a crash mid-delete leaves an ignored folder
        shutil.rmtree(folder)
