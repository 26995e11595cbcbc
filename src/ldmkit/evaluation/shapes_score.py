"""Exact attribute accuracy of `shapes` images: read each image back with `read_shapes` and compare
with the labels its caption was made from.

    is_shapes_dataset(Path("data/shapes"))                # dataset_card.json says name "shapes"
    table = shapes_attribute_scores(images, labels)       # per attribute + mean, with bootstrap CIs

The reader is deterministic and model-free, but not perfect: the same score on the real images of the
same captions is its ceiling (reported next to the generated images' score).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.evaluation.attributes import attribute_accuracy
from ldmkit.metrics.bootstrap import bootstrap_ci

CARD_FILE = "dataset_card.json"


def is_shapes_dataset(root: Path) -> bool:
    """Whether the dataset folder's card names the built-in `shapes` dataset."""
    card = Path(root) / CARD_FILE
    if not card.is_file():
        return False
    try:
        return json.loads(card.read_text(encoding="utf-8")).get("name") == "shapes"
    except (ValueError, AttributeError):
        return False


def shapes_attribute_scores(images: Sequence, labels: Sequence[Mapping[str, str]], *, n_boot: int = 1000,
                            seed: int = 0) -> dict:
    """{"mean": ci, "per_attribute": {name: ci}, "counts": {name: n}} with ci = {"estimate", "low", "high"}.

    The mean bootstraps images, each contributing its own mean over its attributes; with every attribute
    on every image (as in shapes) it equals the unweighted mean over attributes of `attribute_accuracy`.
    """
    from ldmkit.data.builtin.shapes_reader import read_shapes

    if len(images) != len(labels) or not images:
        raise UsageError(f"shapes scoring pairs images with labels: got {len(images)} images, {len(labels)} labels")
    predicted = [read_shapes(image)["labels"] for image in images]
    table = attribute_accuracy(predicted, list(labels))
    per_attribute = {}
    for name in table.per_attribute:
        hits = [float(p.get(name) == t[name]) for p, t in zip(predicted, labels) if name in t]
        per_attribute[name] = _as_dict(bootstrap_ci(np.array(hits), n_boot=n_boot, seed=seed))
    per_image = [np.mean([float(p.get(k) == v) for k, v in t.items() if k in table.per_attribute])
                 for p, t in zip(predicted, labels)]
    # Equal to table.mean when every image has every attribute (shapes labels always do).
    mean = _as_dict(bootstrap_ci(np.array(per_image), n_boot=n_boot, seed=seed))
    return {"mean": mean, "per_attribute": per_attribute, "counts": dict(table.counts)}


def _as_dict(ci) -> dict:
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high}
