"""How well a personalised model (a DreamBooth LoRA, Ruiz et al. 2023) knows its subject, read with ldmkit's own
instruments: the attribute classifier and the dual encoder's image tower.

    match = identity_match(classifier.predict_images(images), subject, IDENTITY)     # per image, in [0, 1]
    near = subject_similarity(image_embeddings(dual, images), image_embeddings(dual, subject_images))
    ratio_ci(match, real_match)                      # subject fidelity as a fraction of real images of the subject
    difference_ci(shows_after, shows_before)         # an asked attribute's rate, after minus before
    gap_fraction_ci(after, before, real)             # leakage: how far the class prompt moved toward the subject

DreamBooth's paper scores subject fidelity with CLIP-I / DINO (the mean cosine similarity between generated and
real subject images, §4.1); `subject_similarity` is that with ldmkit's dual encoder. The attribute classifier
adds an exact reading: the fraction of the subject's identifying attributes an image shows. Every score is a
mean of per-image values, so its interval is a percentile bootstrap over images (`ldmkit.metrics.bootstrap`);
a ratio or gap of means resamples each image set independently.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.bootstrap import ConfidenceInterval, bootstrap_statistic_ci
from ldmkit.metrics.feature_arrays import as_vector

UNIT_TOLERANCE = 1e-3  # embeddings must be L2-normalised rows (features.image_embeddings gives them)


def identity_match(predicted: Sequence[Mapping[str, str]], subject: Mapping[str, str],
                   columns: Sequence[str]) -> np.ndarray:
    """(n,) fraction of `columns` on which each image's predicted attributes equal the subject's."""
    if isinstance(columns, str) or not columns:
        raise UsageError(f"identity columns must be a non-empty list of attribute names, got {columns!r}")
    missing = [c for c in columns if c not in subject]
    if missing:
        raise UsageError(f"the subject has no value for identity attribute(s) {missing}")
    if not predicted:
        raise UsageError("identity_match needs at least one image's predicted attributes")
    return np.array([sum(p.get(c) == subject[c] for c in columns) / len(columns) for p in predicted])


def shows(predicted: Sequence[Mapping[str, str]], column: str, values: Collection[str]) -> np.ndarray:
    """(n,) 1.0 where an image's predicted `column` is one of `values` (the attribute a prompt asked for), else 0."""
    if isinstance(values, str) or not values:
        raise UsageError(f"values must be a non-empty collection of {column} values, got {values!r}")
    if not predicted:
        raise UsageError("shows needs at least one image's predicted attributes")
    return np.array([float(p.get(column) in values) for p in predicted])


def subject_similarity(embeddings, subject_embeddings) -> np.ndarray:
    """(n,) mean cosine similarity of each image's embedding to the subject's real images (CLIP-I per image).
    Both arguments are (n, d) / (m, d) arrays of L2-normalised rows."""
    a, b = (np.asarray(x, dtype=np.float64) for x in (embeddings, subject_embeddings))
    for name, x in (("embeddings", a), ("subject_embeddings", b)):
        if x.ndim != 2 or len(x) == 0:
            raise UsageError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}")
        if not np.all(np.abs(np.linalg.norm(x, axis=1) - 1) < UNIT_TOLERANCE):
            raise UsageError(f"{name} rows must be L2-normalised (ldmkit.evaluation.features.image_embeddings)")
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"embedding widths differ: {a.shape[1]} vs {b.shape[1]}")
    return (a @ b.T).mean(axis=1)


def ratio_ci(values, reference, *, n_boot: int = 1000, seed: int = 0) -> ConfidenceInterval:
    """mean(values) / mean(reference), e.g. generated images' identity match over real images'; the two sets
    resampled independently. UsageError when a resample's reference mean is 0 (no ratio)."""
    values, reference = as_vector(values, "values"), as_vector(reference, "reference")
    if reference.mean() == 0:
        raise UsageError("ratio_ci: the reference mean is 0, so the ratio is undefined")
    with np.errstate(divide="ignore", invalid="ignore"):
        return bootstrap_statistic_ci(lambda v, r: v.mean() / r.mean(), values, reference, n_boot=n_boot, seed=seed)


def difference_ci(values, reference, *, n_boot: int = 1000, seed: int = 0) -> ConfidenceInterval:
    """mean(values) - mean(reference), the two sets resampled independently (defined where a ratio is not: a
    reference that is 0 on some resamples)."""
    values, reference = as_vector(values, "values"), as_vector(reference, "reference")
    return bootstrap_statistic_ci(lambda v, r: v.mean() - r.mean(), values, reference, n_boot=n_boot, seed=seed)


def gap_fraction_ci(values, floor, ceiling, *, n_boot: int = 1000, seed: int = 0) -> ConfidenceInterval:
    """(mean(values) - mean(floor)) / (mean(ceiling) - mean(floor)): how far `values` moved from the floor toward
    the ceiling (0: not at all; 1: all the way). Leakage is this with the base model's class-prompt images as the
    floor and real images of the subject as the ceiling. The three sets are resampled independently."""
    values, floor, ceiling = (as_vector(x, name) for x, name in ((values, "values"), (floor, "floor"),
                                                                  (ceiling, "ceiling")))
    if not ceiling.mean() > floor.mean():
        raise UsageError(f"gap_fraction_ci: the ceiling ({ceiling.mean():.4g}) must score above the floor "
                         f"({floor.mean():.4g}), or there is no gap to measure")
    with np.errstate(divide="ignore", invalid="ignore"):
        return bootstrap_statistic_ci(lambda v, f, c: (v.mean() - f.mean()) / (c.mean() - f.mean()),
                                      values, floor, ceiling, n_boot=n_boot, seed=seed)


def mean_ci(values, *, n_boot: int = 1000, seed: int = 0) -> ConfidenceInterval:
    """The mean of per-image values with its bootstrap interval (one value: no spread, the value itself)."""
    from ldmkit.metrics.bootstrap import bootstrap_ci

    values = as_vector(values, "values")
    if len(values) == 1:
        return ConfidenceInterval(float(values[0]), float(values[0]), float(values[0]))
    return bootstrap_ci(values, n_boot=n_boot, seed=seed)
