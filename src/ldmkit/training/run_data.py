"""The dataset of a training run: opened (built first when it is a missing built-in one) and split.

    train, val = open_splits(recipe.data, run_dir)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ldmkit.errors import DataError, UsageError
from ldmkit.training.recipes import DataSection

DATASET_FOLDER = "dataset"


def dataset_root(data: DataSection, run_dir: Path) -> Path:
    """data.path, or RUN_DIR/dataset when no path is given."""
    return Path(data.path) if data.path is not None else Path(run_dir) / DATASET_FOLDER


def open_dataset(data: DataSection, run_dir: Path):
    """CaptionDataset of the run; a missing or empty folder with `data.builtin` set is built first."""
    from ldmkit.data import CaptionDataset

    root = dataset_root(data, run_dir)
    missing = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if missing:
        if data.builtin is None:
            raise DataError(f"dataset folder {root} does not exist; set data.path to a dataset or data.builtin "
                            f"to one of shapes, emoji, avatars to build one there")
        from ldmkit.data.builtin import build_dataset

        build_dataset(data.builtin, root, n=data.builtin_n, seed=data.builtin_seed, size=data.image_size)
    return CaptionDataset.open(root, class_template=data.class_template)


def split(dataset, data: DataSection, name: str):
    """One split ('train', 'val', 'test') of `dataset` by image-id hash; images matching a combination
    of `data.holdout` are always in 'test' (never trained on)."""
    from ldmkit.data import SplitSpec

    spec = SplitSpec(val=data.val_fraction, test=data.test_fraction)
    if not data.holdout:
        return dataset.split(name, spec)
    return subset(dataset, held_out_split(dataset.samples, spec, data.holdout, name))


def held_out_split(samples, spec, holdout, name: str) -> list:
    """The samples of split `name` when `holdout` combinations are moved to 'test' (see data.splits)."""
    from ldmkit.data.splits import SPLITS, split_with_holdout

    if name not in SPLITS:
        raise UsageError(f"split must be one of {SPLITS}, got {name!r}")
    return [s for s in samples if split_with_holdout(s.image_id, s.labels, spec, holdout) == name]


def subset(dataset, samples):
    """A CaptionDataset of some of `dataset`'s samples (same root, format and bad-input report)."""
    from ldmkit.data import CaptionDataset

    checks = {s.image_id: dataset.checks[s.image_id] for s in samples if s.image_id in dataset.checks}
    return CaptionDataset(dataset.root, dataset.format, list(samples), dataset.report, checks, dataset.caption_files)


def open_splits(data: DataSection, run_dir: Path):
    """(train, val) CaptionDatasets; DataError when the train split is empty."""
    dataset = open_dataset(data, run_dir)
    train, val = split(dataset, data, "train"), split(dataset, data, "val")
    if len(train) == 0:
        raise DataError(f"the train split of {dataset.root} is empty ({len(dataset)} images, "
                        f"val_fraction={data.val_fraction}, test_fraction={data.test_fraction})")
    return train, val


def with_class_captions(dataset, template: str):
    """A copy of `dataset` whose samples are captioned only `template` of their 'class' label."""
    from dataclasses import replace

    from ldmkit.data import CaptionDataset

    samples = []
    for s in dataset.samples:
        if "class" not in s.labels:
            raise DataError(f"unet.class_conditional needs a class-folder dataset; {s.path} has no class label")
        samples.append(replace(s, captions=(template.format(s.labels["class"]),)))
    return CaptionDataset(dataset.root, dataset.format, samples, dataset.report, dataset.checks,
                          dataset.caption_files)


def load_pixels(dataset, size: int):
    """All images of `dataset` standardized to size x size, as one [N, 3, size, size] tensor in [-1, 1]."""
    import numpy as np
    import torch

    from ldmkit.data.cache import default_preprocess

    out = []
    for i in range(len(dataset)):
        img, _ = default_preprocess(dataset.image(i), size)
        out.append(torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32)).permute(2, 0, 1))
    return torch.stack(out) / 127.5 - 1.0


def weights_id(*modules) -> str:
    """SHA-256 (first 16 hex digits) of the modules' parameters and buffers: names the cache's encoders."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]
