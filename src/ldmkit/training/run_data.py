"""The dataset of a training run: opened (built first only when `data.builtin` asks for it) and split.

    train, val = open_splits(recipe.data, run_dir)

A run never trains on something other than what its recipe names: `data.path` must exist; `data.builtin`
builds into data.path (or RUN_DIR/dataset) only when that folder is missing or empty, and an existing
folder must then be that very build (its dataset_card.json: name, seed, size, image counts, phrasings,
emoji aliases). A `data.path` override drops the recipe's `data.builtin` unless the overrides name one too
(`data_source_overrides`). Before step 1 every trainer prints the dataset summary (data_provenance.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmkit.errors import DataError, UsageError
from ldmkit.training.recipes import DataSection

DATASET_FOLDER = "dataset"
BUILTIN_KEYS = ("builtin", "builtin_n", "builtin_seed", "builtin_phrasings", "builtin_phrasing_colours",
                "builtin_phrasing_words", "builtin_emoji_aliases")
"""The data keys that describe the built-in build (dropped together by data_source_overrides)."""


def dataset_root(data: DataSection, run_dir: Path) -> Path:
    """data.path, or RUN_DIR/dataset when no path is given."""
    return Path(data.path) if data.path is not None else Path(run_dir) / DATASET_FOLDER


def open_dataset(data: DataSection, run_dir: Path, *, summary: bool = True):
    """CaptionDataset of the run (the built-in one built first when asked for and missing, see the module
    docstring); prints the dataset summary to stderr unless `summary` is false."""
    from ldmkit.data import CaptionDataset
    from ldmkit.training.data_provenance import print_summary

    root = dataset_root(data, run_dir)
    if data.builtin is None:
        check_dataset_path(root)
    elif not root.exists() or (root.is_dir() and not any(root.iterdir())):
        from ldmkit.data.builtin import build_dataset

        build_dataset(data.builtin, root, n=data.builtin_n, seed=data.builtin_seed, size=data.image_size,
                      phrasings=data.builtin_phrasings, emoji_aliases=data.builtin_emoji_aliases,
                      phrasing_colours=data.builtin_phrasing_colours, phrasing_words=data.builtin_phrasing_words)
    else:
        check_builtin_build(data, root)
    dataset = CaptionDataset.open(root, class_template=data.class_template)
    if summary:
        print_summary(dataset, data)
    return dataset


def check_dataset_path(root: Path) -> None:
    """DataError (one line) unless `root` is an existing dataset: a folder with files, or a COCO .json."""
    if not root.exists():
        raise DataError(f"data.path {root} does not exist (to build a built-in dataset there, set data.builtin)")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"data.path {root} is an empty folder")


def check_builtin_build(data: DataSection, root: Path) -> None:
    """DataError unless the existing folder `root` is the build `data.builtin`/_n/_seed/_phrasings/_emoji_aliases
    and image_size ask for (a run resumed with other caption options never trains on a mix of both)."""
    import json

    from ldmkit.data.builtin.card import CARD_NAME, caption_options

    try:
        card = json.loads((root / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        card = None
    if not isinstance(card, dict) or card.get("name") != data.builtin:
        what = f"a build of {card.get('name')!r}" if isinstance(card, dict) else "no built-in dataset"
        raise DataError(f"data.builtin={data.builtin} but {root} holds {what}; to train on that folder unset it "
                        f"(--set data.builtin=null), or give a new data.path to build {data.builtin} there")
    wanted = {"seed": data.builtin_seed, "size": data.image_size, "n": _requested_counts(data),
              "phrasings": data.builtin_phrasings, "phrasing_colours": data.builtin_phrasing_colours,
              "phrasing_words": data.builtin_phrasing_words,
              "emoji_aliases": data.builtin_emoji_aliases}
    found = {"seed": card.get("seed"), "size": card.get("size"),
             "n": {p: v.get("n_requested") for p, v in card["parts"].items()} if "parts" in card
             else card.get("n_requested"), **caption_options(card)}
    diff = [f"{k} {found[k]} (recipe: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if diff:
        raise DataError(f"{root} holds another build of {data.builtin}: {', '.join(diff)}; give a new data.path "
                        "or match the recipe to it")


def _requested_counts(data: DataSection):
    """The image count(s) a build of data.builtin records in its card (n_requested; per part for a mixture)."""
    if "+" not in data.builtin:
        return data.builtin_n
    from ldmkit.data.builtin.mix import parse_parts, part_sizes
    from ldmkit.training.data_section import BUILTIN_DATASETS

    return part_sizes(parse_parts(data.builtin, BUILTIN_DATASETS), data.builtin_n)


def data_source_overrides(base: dict, overrides) -> dict:
    """`base` (a recipe as a dict) without its data.builtin* keys (BUILTIN_KEYS) when `overrides` set data.path but
    not data.builtin: pointing a run at a folder replaces the recipe's built-in dataset, so a mistyped
    path is an error instead of a fresh build of the recipe's dataset there (issue 12 point 8)."""
    keys = {o.partition("=")[0].strip() for o in overrides}
    if "data.path" not in keys or "data.builtin" in keys or not isinstance(base.get("data"), dict):
        return base
    inert = sorted(keys & {f"data.{k}" for k in BUILTIN_KEYS} - {"data.builtin"})
    if inert and base["data"].get("builtin") is not None:
        raise UsageError(f"{', '.join(inert)} would have no effect: data.path replaces the recipe's "
                         f"data.builtin={base['data']['builtin']}; to build it at data.path, set data.builtin too")
    data = {k: v for k, v in base["data"].items() if k not in BUILTIN_KEYS}
    return {**base, "data": data}


def split(dataset, data: DataSection, name: str):
    """One split ('train', 'val', 'test') of `dataset`: CaptionDataset.split with the recipe's fractions and
    `data.holdout` (images matching a held-out combination are always in 'test', never trained on)."""
    from ldmkit.data import SplitSpec

    return dataset.split(name, SplitSpec(val=data.val_fraction, test=data.test_fraction), data.holdout)


@dataclass(frozen=True)
class RunData:
    """The splits a run trains and validates on, and what they are (ldmkit.json's `dataset` entry)."""

    train: Any
    """CaptionDataset of the train split (never empty)."""
    val: Any
    """CaptionDataset of the validation split (may be empty)."""
    provenance: dict
    """data_provenance() of the whole dataset: path, format, builtin, counts, splits, classes."""


def open_run_data(data: DataSection, run_dir: Path, *, class_conditional: bool = False) -> RunData:
    """Open, summarise (stderr) and split the run's dataset; DataError when the train split is empty.
    `class_conditional`: every image captioned with its class caption (see with_class_captions)."""
    from ldmkit.training.data_provenance import print_summary

    dataset = open_dataset(data, run_dir, summary=False)
    if class_conditional:
        dataset = with_class_captions(dataset, data.class_template)
    provenance = print_summary(dataset, data)
    train, val = split(dataset, data, "train"), split(dataset, data, "val")
    if len(train) == 0:
        raise DataError(f"the train split of {dataset.root} is empty ({len(dataset)} images, "
                        f"val_fraction={data.val_fraction}, test_fraction={data.test_fraction})")
    return RunData(train, val, provenance)


def open_splits(data: DataSection, run_dir: Path):
    """(train, val) CaptionDatasets of open_run_data."""
    run = open_run_data(data, run_dir)
    return run.train, run.val


def with_class_captions(dataset, template: str):
    """A copy of `dataset` whose samples are captioned only with the class caption of their 'class' label
    (ldmkit.data.captions.class_caption: the same caption the class-folder reader gives)."""
    from dataclasses import replace

    from ldmkit.data import CaptionDataset
    from ldmkit.data.captions import class_caption

    samples = []
    for s in dataset.samples:
        if "class" not in s.labels:
            raise DataError(f"unet.class_conditional needs a class-folder dataset; {s.path} has no class label")
        samples.append(replace(s, captions=(class_caption(s.labels["class"], template),)))
    return CaptionDataset(dataset.root, dataset.format, samples, dataset.report, dataset.checks,
                          dataset.caption_files)


def load_pixels(dataset, size: int, trim=None):
    """All images of `dataset` standardized to size x size (the recipe's `data.trim` policy), as one
    [N, 3, size, size] tensor in [-1, 1]."""
    from ldmkit.data.cache import preprocess_for, standardized_pixels

    return standardized_pixels(dataset, size, preprocess_for(trim))[0]


def weights_id(*modules) -> str:
    """SHA-256 (first 16 hex digits) of the modules' parameters and buffers: names the cache's encoders."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]
