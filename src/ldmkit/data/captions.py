"""Turning caption lines into per-image caption lists, counting every bad line on the way.

Shared by all format readers (formats.py): decode text keeping bad UTF-8 detectable, find the image a
line names wherever the distribution put it, and collect captions per image with empty, duplicate and
undecodable captions dropped and counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ldmkit.data.images import is_image_name
from ldmkit.data.report import BadInputReport

IMAGE_SUBFOLDERS = ("images", "Images", "flickr30k_images", "flickr30k_images/flickr30k_images",
                    "Flicker8k_Dataset", "Flickr8k_Dataset", "train2014", "val2014", "train2017", "val2017")
"""Where the real distributions keep their images, tried before searching the whole tree."""
_SURROGATE = re.compile("[\udc80-\udcff]")
_SPACE = re.compile(r"\s+")


def decode_text(data: bytes) -> str:
    """UTF-8 text with undecodable bytes kept as lone surrogates (see has_bad_utf8); BOM removed."""
    text = data.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line without its newline) for every line of a text file."""
    lines = decode_text(path.read_bytes()).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another
    return [(i, line.rstrip("\r")) for i, line in enumerate(lines, start=1)]


def has_bad_utf8(text: str) -> bool:
    return bool(_SURROGATE.search(text))


def normalize_caption(text: str) -> str:
    """Strip and collapse runs of whitespace; the wording itself is never changed."""
    return _SPACE.sub(" ", text).strip()


CLASS_TEMPLATE = "a photo of {}"
"""Default caption of a class-folder image ('{}' is the class name); the one default everywhere."""


def class_name(folder: str) -> str:
    """The words a person types for a class folder: underscores become spaces, whitespace collapsed
    (`mahesh_babu` -> `mahesh babu`). Case is kept; the text encoders ldmkit uses are uncased."""
    return normalize_caption(folder.replace("_", " "))


def check_class_template(template: object) -> str:
    """`template` when it is a string with exactly one '{}'; UsageError otherwise."""
    from ldmkit.errors import UsageError

    if not isinstance(template, str) or template.count("{}") != 1 or "{" in template.replace("{}", ""):
        raise UsageError(f"class_template must be text with exactly one '{{}}' for the class name, got {template!r}")
    return template


def class_caption(folder: str, template: str = CLASS_TEMPLATE) -> str:
    """The caption of every image in class folder `folder`: `template` of class_name(folder).

    The single rule behind the class-folder reader, `ldmkit data stats`, `unet.class_conditional`, the
    classes listed by `ldmkit model info` and the prompt to type (`mahesh_babu` -> "a photo of mahesh babu").
    """
    return normalize_caption(check_class_template(template).replace("{}", class_name(folder)))


def inside(root: Path, relative: str) -> Path | None:
    """root / relative when it stays inside root (no absolute paths, no '..' escapes), else None."""
    normal = os.path.normpath(relative.replace("\\", "/"))
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("../"):
        return None
    return root / normal


class ImageLocator:
    """Finds the file for an image name: as given, in the usual image subfolders, else by file name
    anywhere under root (the shortest such path wins, so the result does not depend on scan order)."""

    def __init__(self, root: Path, subfolders: tuple[str, ...] = IMAGE_SUBFOLDERS) -> None:
        self.root = root
        self.subfolders = subfolders
        self._by_name: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        direct = inside(self.root, name)
        if direct is None:
            return None
        if direct.is_file():
            return direct
        for sub in self.subfolders:
            candidate = inside(self.root / sub, name)
            if candidate is not None and candidate.is_file():
                return candidate
        return self._index().get(Path(name).name)

    def _index(self) -> dict[str, Path]:
        if self._by_name is None:
            found: dict[str, Path] = {}
            for path in sorted(scan_files(self.root), key=lambda p: (len(p.parts), str(p))):
                if is_image_name(path):
                    found.setdefault(path.name, path)
            self._by_name = found
        return self._by_name


def scan_files(root: Path) -> list[Path]:
    """Every regular file under root, skipping hidden files and folders, in sorted order."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(folder) / n for n in sorted(names) if not n.startswith("."))
    return files


@dataclass
class Entry:
    """Captions gathered so far for one image."""

    path: Path
    captions: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


class CaptionCollector:
    """Gathers (image name, caption) pairs from caption lines into per-image entries.

    Every problem is counted in `report` at the file and line it came from: bad UTF-8, empty captions,
    a caption repeated for the same image, and names whose image is not on disk (one count per image).
    """

    def __init__(self, root: Path, report: BadInputReport, locator: ImageLocator | None = None) -> None:
        self.root = root
        self.report = report
        self.locator = locator or ImageLocator(root)
        self.entries: dict[str, Entry] = {}
        self.missing: set[str] = set()

    def image(self, name: str, *, file: Path, line: int | None) -> Entry | None:
        """The entry for an image name (created on first use), or None when its file is missing."""
        name = name.strip().replace("\\", "/")
        if name in self.entries:
            return self.entries[name]
        if name in self.missing:
            return None
        if has_bad_utf8(name):
            self.report.add("bad_utf8", self.rel(file), line=line, detail=f"image name {name!r}")
            return None
        path = self.locator.find(name) if name else None
        if path is None:
            self.missing.add(name)
            self.report.add("missing_image", self.rel(file), line=line, detail=f"no image file {name!r}")
            return None
        entry = self.entries[name] = Entry(path)
        return entry

    def add(self, name: str, caption: object, *, file: Path, line: int | None,
            labels: dict[str, str] | None = None) -> None:
        """One caption of one image (labels, when given, are set the first time the image is seen)."""
        entry = self.image(name, file=file, line=line)
        if entry is None:
            return
        if labels and not entry.labels:
            entry.labels.update(labels)
        self.add_caption(entry, caption, file=file, line=line)

    def add_caption(self, entry: Entry, caption: object, *, file: Path, line: int | None) -> None:
        text = normalize_caption("" if caption is None else str(caption))
        where = self.rel(file)
        if has_bad_utf8(text):
            self.report.add("bad_utf8", where, line=line, detail=f"caption {text.encode('utf-8', 'replace')!r}")
        elif not text:
            self.report.add("empty_caption", where, line=line)
        elif text in entry.seen:
            self.report.add("duplicate_line", where, line=line, detail=repr(text[:80]))
        else:
            entry.seen.add(text)
            entry.captions.append(text)

    def malformed(self, file: Path, line: int | None, detail: str) -> None:
        self.report.add("malformed_line", self.rel(file), line=line, detail=detail)

    def rel(self, path: Path) -> str:
        """A path relative to the dataset root when possible (shorter, and the same on every machine)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def records(self) -> list[tuple[str, Path, tuple[str, ...], dict[str, str]]]:
        """(image id, path, captions, labels) per image with at least one caption; the rest count as
        no_caption. Sorted by image id so every later step is deterministic."""
        out = []
        for name in sorted(self.entries):
            entry = self.entries[name]
            if entry.captions:
                out.append((name, entry.path, tuple(entry.captions), dict(entry.labels)))
            else:
                self.report.add("no_caption", self.rel(entry.path), detail="every caption line was dropped")
        return out
