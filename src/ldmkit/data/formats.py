"""Caption dataset formats: detection and one reader per format.

| format        | what is on disk                                                                    |
|---------------|------------------------------------------------------------------------------------|
| imagefolder   | images + `metadata.jsonl` or `metadata.csv` (Hugging Face): `file_name`, a caption  |
|               | column `text`/`caption`/`captions` (a string or a list), every other column a label |
| coco          | `annotations/captions_*.json` (or a .json given as the root): images + annotations |
| flickr30k     | `results.csv` (`image_name| comment_number| comment`) or `results_20130124.token`  |
| flickr8k      | `captions.txt` (CSV `image,caption`) or `Flickr8k.token.txt` (`name.jpg#n<TAB>text`)|
| sidecar       | `photo.jpg` + `photo.txt` / `photo.caption`, one caption per non-empty line          |
| classfolders  | `root/<class name>/*.jpg`; caption from a template, the class kept as label `class` |

Each reader returns records (image id, path, captions, labels) and counts bad lines in the report; images
are checked later (dataset.py). Caption files may sit in a subfolder as in the real distributions.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ldmkit.data.captions import (
    CLASS_TEMPLATE,
    CaptionCollector,
    check_class_template,
    class_caption,
    decode_text,
    has_bad_utf8,
    inside,
    read_lines,
    scan_files,
)
from ldmkit.data.images import is_image_name
from ldmkit.data.report import BadInputReport
from ldmkit.errors import DataError, UsageError

FORMATS = ("imagefolder", "coco", "flickr30k", "flickr8k", "sidecar", "classfolders")
CAPTION_COLUMNS = ("text", "caption", "captions")
SIDECAR_SUFFIXES = (".txt", ".caption")
FLICKR30K_FILES = ("results.csv", "results_20130124.token")
FLICKR8K_FILES = ("captions.txt", "Flickr8k.token.txt")
SEARCH_DEPTH = 2
"""How many folder levels below the root are searched for a distribution's caption file."""
JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})

Record = tuple[str, Path, tuple[str, ...], dict[str, str]]


@dataclass(frozen=True)
class FormatRead:
    """What a format reader found."""

    format: str
    """One of FORMATS."""
    records: list[Record]
    """(image id, image path, captions, labels), sorted by image id."""
    caption_files: tuple[Path, ...]
    """The files the captions came from (empty for folder formats without caption files)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} not in {FORMATS}")


def read_format(root: Path, report: BadInputReport, *, format: str | None = None,
                class_template: str = CLASS_TEMPLATE) -> FormatRead:
    """Read the dataset at root (a folder, or a COCO .json file) in the given or detected format."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    check_class_template(class_template)
    fmt = format or detect_format(root)
    if fmt == "coco":
        return read_coco(root, report)
    if root.is_file():
        raise DataError(f"{root} is a file; only the coco format reads a single (.json) file")
    readers = {"imagefolder": read_imagefolder, "flickr30k": read_flickr30k, "flickr8k": read_flickr8k,
               "sidecar": read_sidecar}
    if fmt == "classfolders":
        return read_class_folders(root, report, class_template)
    return readers[fmt](root, report)


def detect_format(root: Path) -> str:
    """The format of a dataset folder (see the table above); DataError when nothing matches."""
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{root} is a file; give a dataset folder, or a COCO captions .json")
    if (root / "metadata.jsonl").is_file() or (root / "metadata.csv").is_file():
        return "imagefolder"
    if coco_files(root):
        return "coco"
    if find_caption_file(root, FLICKR30K_FILES):
        return "flickr30k"
    if find_caption_file(root, FLICKR8K_FILES):
        return "flickr8k"
    images = [p for p in scan_files(root) if is_image_name(p)]
    if any(sidecar_files(p) for p in images):
        return "sidecar"
    if any(p.parent != root for p in images):
        return "classfolders"
    raise DataError(
        f"cannot tell the dataset format of {root}: found {len(images)} images but no captions. Expected "
        "metadata.jsonl/metadata.csv, annotations/captions_*.json (COCO), results.csv (Flickr30k), "
        "captions.txt or Flickr8k.token.txt (Flickr8k), photo.txt beside photo.jpg (sidecar), or "
        f"one folder per class. Formats: {', '.join(FORMATS)}")


def find_caption_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` found in root or up to SEARCH_DEPTH folders below (shallowest first)."""
    for depth in range(SEARCH_DEPTH + 1):
        for name in names:
            hits = [h for h in sorted(root.glob("/".join(["*"] * depth + [name])))
                    if h.is_file() and not any(part.startswith(".") for part in h.parts[-depth - 1:])]
            if hits and (name != "captions.txt" or _looks_like_flickr8k_csv(hits[0])):
                return hits[0]
    return None


def _looks_like_flickr8k_csv(path: Path) -> bool:
    with path.open("rb") as f:
        head = decode_text(f.readline()).strip().replace(" ", "").lower()
    return head == "image,caption"


def coco_files(root: Path) -> list[Path]:
    return sorted((root / "annotations").glob("captions_*.json")) + sorted(root.glob("captions_*.json"))


def sidecar_files(image: Path) -> list[Path]:
    return [image.with_suffix(s) for s in SIDECAR_SUFFIXES if image.with_suffix(s).is_file()]


# ---------------------------------------------------------------- imagefolder (metadata.jsonl / .csv)

def read_imagefolder(root: Path, report: BadInputReport) -> FormatRead:
    collector = CaptionCollector(root, report)
    files = [root / n for n in ("metadata.jsonl", "metadata.csv") if (root / n).is_file()]
    if not files:
        raise DataError(f"{root} has no metadata.jsonl or metadata.csv (format 'imagefolder')")
    for path in files:
        rows = _jsonl_rows(path, collector) if path.suffix == ".jsonl" else _csv_rows(path, collector)
        for line, row in rows:
            _add_metadata_row(collector, path, line, row)
    return FormatRead("imagefolder", collector.records(), tuple(files))


def _jsonl_rows(path: Path, collector: CaptionCollector):
    for line, text in read_lines(path):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            collector.malformed(path, line, f"not valid JSON: {err.msg} at column {err.colno}")
            continue
        if not isinstance(row, dict):
            collector.malformed(path, line, f"expected a JSON object, got {type(row).__name__}")
            continue
        yield line, row


def _csv_rows(path: Path, collector: CaptionCollector):
    lines = decode_text(path.read_bytes()).splitlines()
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    if "file_name" not in header:
        raise DataError(f"{path}: the header has no 'file_name' column (columns: {header})")
    start = reader.line_num + 1
    for values in reader:
        if len(values) != len(header):
            if any(v.strip() for v in values):
                collector.malformed(path, start, f"{len(values)} fields, the header has {len(header)}")
        else:
            yield start, dict(zip(header, values))
        start = reader.line_num + 1


def _add_metadata_row(collector: CaptionCollector, path: Path, line: int, row: dict) -> None:
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        collector.malformed(path, line, "no 'file_name' value")
        return
    if inside(collector.root, name) is None:
        collector.malformed(path, line, f"file_name {name!r} points outside the dataset folder")
        return
    columns = [c for c in CAPTION_COLUMNS if c in row]
    if not columns:
        collector.malformed(path, line, f"no caption column (one of {', '.join(CAPTION_COLUMNS)})")
        return
    labels = {k: _label_text(v) for k, v in row.items()
              if k != "file_name" and k not in CAPTION_COLUMNS and v is not None}
    entry = collector.image(name, file=path, line=line)
    if entry is None:
        return
    if not entry.labels:
        entry.labels.update(labels)
    for column in columns:
        for caption in _caption_values(row[column]):
            collector.add_caption(entry, caption, file=path, line=line)


def _caption_values(value: object) -> list:
    """A caption cell as a list: JSON lists as they are; in CSV, a cell holding a JSON list is a list."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        if isinstance(parsed, list):
            return parsed
    return [value]


def _label_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------- sidecar and class folders

def read_sidecar(root: Path, report: BadInputReport) -> FormatRead:
    collector = CaptionCollector(root, report)
    files = scan_files(root)
    images = {p.with_suffix("") for p in files if is_image_name(p)}
    caption_files = []
    for path in files:
        if path.suffix.lower() in SIDECAR_SUFFIXES and path.with_suffix("") not in images:
            report.add("missing_image", collector.rel(path), detail="caption file without an image beside it")
    for image in (p for p in files if is_image_name(p)):
        name = image.relative_to(root).as_posix()
        entry = collector.image(name, file=image, line=None)
        if entry is None:  # an undecodable file name, already counted
            continue
        sidecars = sidecar_files(image)
        caption_files.extend(sidecars)
        for sidecar in sidecars:
            lines = [(n, text) for n, text in read_lines(sidecar) if text.strip()] or [(1, "")]
            for line, text in lines:
                collector.add_caption(entry, text, file=sidecar, line=line)
        if not sidecars:
            report.add("no_caption", name, detail=f"no {' or '.join(SIDECAR_SUFFIXES)} file beside it")
            del collector.entries[name]
    return FormatRead("sidecar", collector.records(), tuple(caption_files))


def read_class_folders(root: Path, report: BadInputReport, template: str) -> FormatRead:
    collector = CaptionCollector(root, report)
    for path in scan_files(root):
        name = path.relative_to(root).as_posix()
        if path.parent == root:
            if is_image_name(path):
                report.add("no_caption", name, detail="image is not inside a class folder")
            continue
        if not is_image_name(path):
            if path.name.lower() not in JUNK_FILES:
                report.add("not_an_image", name, detail=f"{path.suffix or 'no'} suffix in a class folder")
            continue
        folder = path.relative_to(root).parts[0]
        if has_bad_utf8(folder):
            report.add("bad_utf8", name, detail=f"class folder name {folder!r}")
            continue
        entry = collector.image(name, file=path, line=None)
        if entry is None:
            continue
        entry.labels["class"] = folder
        collector.add_caption(entry, class_caption(folder, template), file=path, line=None)
    return FormatRead("classfolders", collector.records(), ())


# ---------------------------------------------------------------- Flickr8k / Flickr30k

def read_flickr8k(root: Path, report: BadInputReport) -> FormatRead:
    path = find_caption_file(root, FLICKR8K_FILES)
    if path is None:
        raise DataError(f"no Flickr8k caption file ({' or '.join(FLICKR8K_FILES)}) under {root}")
    collector = CaptionCollector(root, report)
    if path.name == "captions.txt":
        _read_flickr8k_csv(path, collector)
    else:
        _read_token_file(path, collector)
    return FormatRead("flickr8k", collector.records(), (path,))


def _read_flickr8k_csv(path: Path, collector: CaptionCollector) -> None:
    lines = decode_text(path.read_bytes()).splitlines()
    reader = csv.reader(lines)
    next(reader, None)  # header 'image,caption', checked by detection
    start = reader.line_num + 1
    for values in reader:
        if len(values) >= 2:  # an unquoted comma inside the caption splits it: join it back
            collector.add(values[0], ",".join(values[1:]), file=path, line=start)
        elif any(v.strip() for v in values):
            collector.malformed(path, start, "expected 'image,caption'")
        start = reader.line_num + 1


def _read_token_file(path: Path, collector: CaptionCollector) -> None:
    """`name.jpg#n<TAB>caption` lines (Flickr8k.token.txt, Flickr30k results_20130124.token)."""
    for line, text in read_lines(path):
        if not text.strip():
            continue
        key, tab, caption = text.partition("\t")
        name, hash_, number = key.rpartition("#")
        if not tab or not hash_ or not number.strip().isdigit():
            collector.malformed(path, line, "expected 'name.jpg#n<TAB>caption'")
            continue
        collector.add(name, caption, file=path, line=line)


def read_flickr30k(root: Path, report: BadInputReport) -> FormatRead:
    path = find_caption_file(root, FLICKR30K_FILES)
    if path is None:
        raise DataError(f"no Flickr30k caption file ({' or '.join(FLICKR30K_FILES)}) under {root}")
    collector = CaptionCollector(root, report)
    if path.suffix == ".token":
        _read_token_file(path, collector)
        return FormatRead("flickr30k", collector.records(), (path,))
    for line, text in read_lines(path):
        fields = [f.strip() for f in text.split("|")]
        if line == 1 and fields[0] == "image_name" or not text.strip():
            continue
        if len(fields) < 3 or not fields[1].isdigit():
            collector.malformed(path, line, "expected 'image_name| comment_number| comment'")
            continue
        collector.add(fields[0], "|".join(fields[2:]), file=path, line=line)
    return FormatRead("flickr30k", collector.records(), (path,))


# ---------------------------------------------------------------- COCO captions

def read_coco(root: Path, report: BadInputReport) -> FormatRead:
    if root.is_file():
        files = [root]
        base = root.parent.parent if root.parent.name == "annotations" else root.parent
    else:
        files, base = coco_files(root), root
    if not files:
        raise DataError(f"no COCO captions file (annotations/captions_*.json) under {root}")
    collector = CaptionCollector(base, report)
    for path in files:
        _read_coco_file(path, collector)
    return FormatRead("coco", collector.records(), tuple(files))


def _read_coco_file(path: Path, collector: CaptionCollector) -> None:
    try:
        data = json.loads(decode_text(path.read_bytes()))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a COCO captions file: expected an object with 'images' and 'annotations'")
    names: dict[object, str] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            collector.malformed(path, None, f"images[{i}] needs 'id' and 'file_name'")
            continue
        names[image["id"]] = image["file_name"]
    captioned = set()
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            collector.malformed(path, None, f"annotations[{i}] needs 'image_id' and 'caption'")
            continue
        if ann["image_id"] not in names:
            collector.malformed(path, None, f"annotations[{i}] refers to image_id {ann['image_id']!r}, "
                                            "which is not in 'images'")
            continue
        captioned.add(ann["image_id"])
        collector.add(names[ann["image_id"]], ann["caption"], file=path, line=None,
                      labels={"coco_id": str(ann["image_id"])})
    for image_id, name in names.items():
        if image_id not in captioned:  # e.g. the test split ships images without captions
            entry = collector.image(name, file=path, line=None)
            if entry is not None:
                entry.labels.setdefault("coco_id", str(image_id))
