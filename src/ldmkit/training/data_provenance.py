"""What data a run trained on: the summary printed before step 1 and the `dataset` entry of ldmkit.json.

    prov = data_provenance(dataset, recipe.data)   # JSON-ready: path, format, builtin, counts, splits, classes
    print_summary(dataset, recipe.data)             # the same, one screen, on stderr (process 0 only)

Everything here is measured on the opened dataset, never copied from the recipe: a Flickr folder is
recorded as flickr8k with its own counts, and `builtin` is set only when the folder is that build.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

SHOWN_CLASSES = 12
"""Classes named in the printed summary (ldmkit.json lists every class)."""


def data_provenance(dataset, data) -> dict:
    """The data a run uses, as plain JSON types (see the module docstring)."""
    from ldmkit.data.splits import SPLITS, SplitSpec

    spec = SplitSpec(val=data.val_fraction, test=data.test_fraction)
    root = Path(dataset.root)
    out = {
        "path": str(root.resolve()),
        "format": dataset.format,
        "builtin": _builtin_card(root, data),
        "images": len(dataset),
        "captions": sum(len(s.captions) for s in dataset.samples),
        "bad": dataset.report.counts(),
        "splits": {name: len(dataset.split(name, spec, data.holdout)) for name in SPLITS},
        "fingerprint": fingerprint(dataset),
    }
    classes = dataset_classes(dataset)
    if classes:
        out["class_template"] = data.class_template
        out["classes"] = classes
    return out


def dataset_classes(dataset) -> list[dict]:
    """[{"class": folder, "prompt": the caption its images train with, "images": n}] in folder order;
    empty when the samples carry no 'class' label."""
    found: dict[str, dict] = {}
    for s in dataset.samples:
        folder = s.labels.get("class")
        if folder is not None:
            entry = found.setdefault(folder, {"class": folder, "prompt": s.captions[0], "images": 0})
            entry["images"] += 1
    return [found[k] for k in sorted(found)]


def fingerprint(dataset) -> str:
    """SHA-256 (16 hex digits) of every image id with its captions: tells two datasets apart."""
    h = hashlib.sha256()
    for s in dataset.samples:
        h.update(json.dumps([s.image_id, list(s.captions)], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def _builtin_card(root: Path, data) -> dict | None:
    """{name, seed, size, images, phrasings, emoji_aliases} of the built-in build at root when data.builtin asked
    for it, else None."""
    if data.builtin is None:
        return None
    from ldmkit.data.builtin.card import CARD_NAME, caption_options

    card = json.loads((root / CARD_NAME).read_text(encoding="utf-8"))
    return {**{k: card.get(k) for k in ("name", "seed", "size", "images")}, **caption_options(card)}


def summary_lines(prov: dict) -> list[str]:
    """The provenance as a few lines for people."""
    built = prov["builtin"]
    extras = ([f"free phrasings per avatar: {built['phrasings']}"
               + (" (each naming its colours)" if built.get("phrasing_colours") else "")
               + (f" (words: {built['phrasing_words']})" if built.get("phrasing_words", "train") != "train" else "")]
              if built and built.get("phrasings") else []) + \
        (["CLDR emoji aliases"] if built and built.get("emoji_aliases") else [])
    source = (f"built-in {built['name']} (seed {built['seed']}, {built['size']} px"
              f"{''.join(', ' + e for e in extras)})" if built else "your data")
    bad = prov["bad"]
    lines = [
        f"data: {prov['path']}",
        f"  format {prov['format']}, {source}",
        f"  images {prov['images']}, captions {prov['captions']}, bad {sum(bad.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in bad.items())})" if bad else ""),
        "  splits: " + ", ".join(f"{k} {v}" for k, v in prov["splits"].items()),
    ]
    classes = prov.get("classes", [])
    if classes:
        lines.append(f"  classes {len(classes)} (caption = prompt to type):")
        lines += [f"    {c['class']}: {c['images']} images, \"{c['prompt']}\"" for c in classes[:SHOWN_CLASSES]]
        if len(classes) > SHOWN_CLASSES:
            lines.append(f"    ... {len(classes) - SHOWN_CLASSES} more (all in ldmkit.json)")
    return lines


def print_summary(dataset, data) -> dict:
    """Print the dataset summary on stderr (process 0 of a multi-process launch only); returns the provenance."""
    prov = data_provenance(dataset, data)
    if os.environ.get("RANK", "0") == "0":
        print("\n".join(summary_lines(prov)), file=sys.stderr, flush=True)
    return prov
