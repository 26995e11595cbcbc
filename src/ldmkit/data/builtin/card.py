"""What a built-in dataset build produces: records, the dataset card, metadata.jsonl, README.md.

Layout written (Hugging Face imagefolder convention, read by `CaptionDataset.open`):

    out/images/00000.png ...
    out/metadata.jsonl       {"file_name": "images/00000.png", "text": [captions...], <label>: "<value>", ...}
    out/dataset_card.json    the card returned by `build_dataset`
    out/README.md            the same card, for people

No timestamps are written anywhere, so the same (name, n, seed, size) gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ldmkit.errors import DataError, UsageError

CARD_NAME = "dataset_card.json"
METADATA_NAME = "metadata.jsonl"
README_NAME = "README.md"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class Record:
    """One image of a built-in dataset and everything known about it."""

    file_name: str
    """Path of the image relative to the dataset root, posix style (``images/00000.png``)."""
    captions: tuple[str, ...]
    """Every caption of the image, most literal first; at least one, none empty."""
    labels: dict[str, str]
    """Attribute name -> value as a plain string; every record of a dataset has the same keys."""

    def __post_init__(self) -> None:
        if not self.file_name or self.file_name.startswith("/") or "\\" in self.file_name:
            raise UsageError(f"record file_name must be a relative posix path, got {self.file_name!r}")
        if not self.captions or any(not c.strip() for c in self.captions):
            raise UsageError(f"record {self.file_name}: captions must be non-empty strings, got {self.captions!r}")
        reserved = {"file_name", "text"} & set(self.labels)
        if reserved:
            raise UsageError(f"record {self.file_name}: label names {sorted(reserved)} are reserved")
        if any(not isinstance(v, str) for v in self.labels.values()):
            raise UsageError(f"record {self.file_name}: label values must be strings, got {self.labels!r}")


@dataclass(frozen=True)
class BuildResult:
    """What a dataset builder wrote into the images folder, plus the facts the card needs."""

    name: str
    """Dataset name as given to `build_dataset` (``shapes``, ``emoji``, ``avatars``)."""
    records: tuple[Record, ...]
    """One record per written image, in file order."""
    sources: dict[str, str]
    """Package (PyPI or Debian) -> installed version that the images and names come from."""
    licenses: dict[str, str]
    """Source -> licence of the material it contributes."""
    templates: tuple[str, ...]
    """The caption templates, with ``{placeholders}`` for the attributes."""
    notes: tuple[str, ...] = field(default=())
    """Anything a user of the data should know (heuristic labels, skipped items, ...)."""

    def __post_init__(self) -> None:
        if not self.records:
            raise DataError(f"dataset {self.name!r}: the builder produced no images")
        keys = set(self.records[0].labels)
        for record in self.records:
            if set(record.labels) != keys:
                raise UsageError(
                    f"dataset {self.name!r}: {record.file_name} has labels {sorted(record.labels)}, "
                    f"the first record has {sorted(keys)}; every record needs the same label columns"
                )


def make_card(result: BuildResult, *, n: int | None, seed: int, size: int) -> dict:
    """The dataset card as a JSON-ready dict (counts computed from the records)."""
    label_values: dict[str, dict[str, int]] = {}
    for record in result.records:
        for key, value in record.labels.items():
            counts = label_values.setdefault(key, {})
            counts[value] = counts.get(value, 0) + 1
    from ldmkit import __version__

    return {
        "name": result.name,
        "builder": f"ldmkit {__version__}",
        "format": "imagefolder (images/ + metadata.jsonl, captions in 'text')",
        "seed": seed,
        "size": size,
        "n_requested": n,
        "images": len(result.records),
        "captions": sum(len(r.captions) for r in result.records),
        "label_columns": sorted(label_values),
        "label_counts": {k: dict(sorted(v.items())) for k, v in sorted(label_values.items())},
        "sources": dict(result.sources),
        "licenses": dict(result.licenses),
        "caption_templates": list(result.templates),
        "notes": list(result.notes),
    }


def caption_options(card: dict) -> dict:
    """{"phrasings": int, "phrasing_colours": bool, "phrasing_words": str, "emoji_aliases": bool} a card was
    built with (a mixture's from its parts' cards; a card without them, e.g. one written before they existed,
    is a build without them)."""
    parts = card.get("part_cards") if isinstance(card.get("part_cards"), dict) else {"": card}
    parts = [p for p in parts.values() if isinstance(p, dict)]
    return {"phrasings": sum(p.get("phrasings", 0) for p in parts),
            "phrasing_colours": any(p.get("phrasing_colours", False) is True for p in parts),
            "phrasing_words": next((p["phrasing_words"] for p in parts if p.get("phrasing_words", "train") != "train"),
                                   "train"),
            "emoji_aliases": any(p.get("emoji_aliases", False) is True for p in parts)}


def write_build(out: Path, result: BuildResult, card: dict) -> None:
    """Write metadata.jsonl, dataset_card.json and README.md (the images are already written)."""
    lines = []
    for record in result.records:
        row = {"file_name": record.file_name, "text": list(record.captions), **record.labels}
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=False))
    (out / METADATA_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / README_NAME).write_text(readme_text(card), encoding="utf-8")


def readme_text(card: dict) -> str:
    """A short human-readable README.md for the dataset card."""
    lines = [
        f"# {card['name']} (built-in ldmkit dataset)",
        "",
        f"{card['images']} images of {card['size']}x{card['size']} px, {card['captions']} captions, "
        f"seed {card['seed']}, built by {card['builder']}. Format: {card['format']}.",
        "",
        "## Sources and licences",
        "",
    ]
    lines += [f"- {pkg} {version}: {card['licenses'].get(pkg, 'see the package')}" for pkg, version in card["sources"].items()]
    lines += ["", "## Caption templates", ""]
    lines += [f"- `{t}`" for t in card["caption_templates"]]
    lines += ["", "## Labels", ""]
    for column in card["label_columns"]:
        values = card["label_counts"][column]
        shown = ", ".join(f"{v} ({c})" for v, c in sorted(values.items(), key=lambda kv: -kv[1])[:8])
        more = f", ... {len(values) - 8} more" if len(values) > 8 else ""
        lines.append(f"- `{column}`: {len(values)} values: {shown}{more}")
    if card["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in card["notes"]]
    return "\n".join(lines) + "\n"


def prepare_output(out: Path, name: str) -> None:
    """Make `out` ready for a build of `name`: create it, or clear an earlier build of the same dataset.

    Refuses (UsageError) a non-empty folder that is not an earlier build of `name`, or one that holds
    files the earlier build did not write; only files listed in its metadata.jsonl are removed.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        return
    card_path = out / CARD_NAME
    try:
        earlier = json.loads(card_path.read_text(encoding="utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"output folder {out} is not empty and holds no {CARD_NAME} of an earlier build; "
            "choose an empty or new folder"
        ) from None
    if earlier != name:
        raise UsageError(f"output folder {out} holds a build of {earlier!r}, not {name!r}; choose another folder")
    listed = set()
    for line in (out / METADATA_NAME).read_text(encoding="utf-8").splitlines() if (out / METADATA_NAME).exists() else []:
        if line.strip():
            listed.add(json.loads(line)["file_name"])
    ours = listed | {CARD_NAME, METADATA_NAME, README_NAME}
    found = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    foreign = sorted(found - ours)
    if foreign:
        raise UsageError(
            f"output folder {out} holds an earlier {name!r} build plus files it did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); refusing to overwrite"
        )
    for rel in sorted(found):
        (out / rel).unlink()
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def image_name(index: int) -> str:
    """Relative file name of the `index`-th image."""
    return f"{IMAGES_DIR}/{index:05d}.png"


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def package_version(dist: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
