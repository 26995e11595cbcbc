"""Percentile-bootstrap confidence intervals (Efron & Tibshirani 1993, ch. 13).

    bootstrap_ci(per_image_scores)                         # CI of a mean
    bootstrap_statistic_ci(frechet_distance, gen, ref)     # CI of a set metric; each set resampled
    bootstrap_counts_ci(batched_mmd2, n_gen, n_ref)        # the same, vectorised over replicates
    paired_difference_ci(counts_fd, gen_a, gen_b, ref)     # B - A of a set metric, pairs resampled together

method="percentile" (the default) takes the alpha/2 and 1 - alpha/2 quantiles of the replicates.
method="basic" reflects them around the estimate, [2 t - q_hi, 2 t - q_lo] (Davison & Hinkley 1997,
eq. 5.6): it corrects a statistic whose resampled values are shifted by its own small-sample bias,
as the Fréchet distance's are (see frechet.frechet_distance_ci), to first order.

A replicate resamples every sample set independently, with replacement, to its own size (the two
sets of a set metric are independent draws, so this is the stratified bootstrap). The estimate is
the statistic on the original data, not the mean of the replicates. All three functions draw the
same resamples for the same seed and sizes, so their intervals agree for the same statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Integral
from typing import NamedTuple

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.feature_arrays import as_vector, to_numpy

METHODS = ("percentile", "basic")
MAX_CHUNK_ENTRIES = 2**22  # resampling indices held at once (32 MiB of int64)


class ConfidenceInterval(NamedTuple):
    """A point estimate and its (1 - alpha) percentile-bootstrap interval; unpacks as (estimate, low, high)."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(values, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 method: str = "percentile") -> ConfidenceInterval:
    """CI of the mean of per-item values (CLIP scores, retrieval hits, attribute correctness)."""
    _check_options(alpha, method)
    values = as_vector(values, "values")
    replicates = [values[index].mean(axis=1) for (index,) in _index_chunks([len(values)], n_boot, seed)]
    return interval_from_replicates(float(values.mean()), np.concatenate(replicates), alpha, method)


def bootstrap_statistic_ci(statistic: Callable[..., float], *samples, n_boot: int = 1000, seed: int = 0,
                           alpha: float = 0.05, method: str = "percentile") -> ConfidenceInterval:
    """CI of statistic(*samples), each sample (array indexed by its first axis) resampled independently."""
    _check_options(alpha, method)
    arrays = [to_numpy(sample) for sample in samples]
    if not arrays or any(a.ndim == 0 or len(a) == 0 for a in arrays):
        raise UsageError("bootstrap_statistic_ci needs at least one non-empty sample array")
    replicates = []
    for chunk in _index_chunks([len(a) for a in arrays], n_boot, seed):
        for row in range(len(chunk[0])):
            replicates.append(float(statistic(*(a[index[row]] for a, index in zip(arrays, chunk)))))
    return interval_from_replicates(float(statistic(*arrays)), np.asarray(replicates), alpha, method)


def bootstrap_counts_ci(batched_statistic: Callable[..., np.ndarray], *sizes: int, n_boot: int = 1000,
                        seed: int = 0, alpha: float = 0.05, method: str = "percentile") -> ConfidenceInterval:
    """CI of a statistic given as a function of resampling counts.

    batched_statistic(*counts) receives one (replicates, size_j) float matrix per sample set (how
    often each original item appears in each replicate) and returns one value per replicate. The
    estimate is its value at all-ones counts. This is how kernel metrics bootstrap in a few matrix
    products instead of one kernel evaluation per replicate.
    """
    _check_options(alpha, method)
    sizes = [int(size) for size in sizes]
    if not sizes or min(sizes) < 1:
        raise UsageError(f"bootstrap_counts_ci needs positive sample sizes; got {sizes}")
    replicates = []
    for chunk in _index_chunks(sizes, n_boot, seed):
        counts = [_counts(index, size) for index, size in zip(chunk, sizes)]
        replicates.append(np.asarray(batched_statistic(*counts), dtype=np.float64).reshape(-1))
    estimate = np.asarray(batched_statistic(*(np.ones((1, size)) for size in sizes)), dtype=np.float64)
    return interval_from_replicates(float(estimate.reshape(-1)[0]), np.concatenate(replicates), alpha, method)


def paired_difference_ci(counts_statistic: Callable[..., np.ndarray], a: np.ndarray, b: np.ndarray,
                         reference: np.ndarray, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                         method: str = "percentile") -> ConfidenceInterval:
    """CI of statistic(b, reference) - statistic(a, reference) where row i of a and row i of b are paired (two
    systems' outputs for the same input: the same prompt and seed).

    counts_statistic(x, counts_x, reference, counts_reference) gives the statistic per row of count matrices, as
    bootstrap_counts_ci passes them. A replicate resamples the pairs (one count row for a and b alike) and the
    reference set, so the variation the two share (which inputs were drawn, which references) cancels in the
    difference instead of widening it, as it would in two separate intervals.
    """
    if len(a) != len(b):
        raise UsageError(f"paired_difference_ci needs paired sets of one size; got {len(a)} and {len(b)}")
    return bootstrap_counts_ci(
        lambda pairs, ref: (np.asarray(counts_statistic(b, pairs, reference, ref), dtype=np.float64)
                            - np.asarray(counts_statistic(a, pairs, reference, ref), dtype=np.float64)),
        len(a), len(reference), n_boot=n_boot, seed=seed, alpha=alpha, method=method)


def interval_from_replicates(estimate: float, replicates: np.ndarray, alpha: float,
                             method: str = "percentile") -> ConfidenceInterval:
    """The (1 - alpha) interval from bootstrap replicates: their quantiles ("percentile") or the
    quantiles reflected around the estimate ("basic")."""
    _check_options(alpha, method)
    replicates = np.asarray(replicates, dtype=np.float64)
    bad = int((~np.isfinite(replicates)).sum())
    if bad:
        raise UsageError(f"{bad} of {len(replicates)} bootstrap replicates are not finite; "
                         "the statistic is undefined on some resamples (too few distinct items?)")
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    if method == "basic":
        low, high = 2 * estimate - high, 2 * estimate - low
    return ConfidenceInterval(float(estimate), float(low), float(high))


def _index_chunks(sizes: list[int], n_boot: int, seed: int) -> Iterator[list[np.ndarray]]:
    """Resampling indices, a chunk of replicates at a time: one (rows, size_j) array per set.

    Each set draws from its own stream (spawned from seed), so the resamples do not depend on
    the chunk size; chunks hold at most MAX_CHUNK_ENTRIES indices to bound memory.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, Integral) or n_boot < 2:
        raise UsageError(f"n_boot must be an integer >= 2 (1000 is usual); got {n_boot!r}")
    rngs = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(len(sizes))]
    rows_per_chunk = max(1, MAX_CHUNK_ENTRIES // sum(sizes))
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        yield [rng.integers(0, size, size=(rows, size)) for rng, size in zip(rngs, sizes)]


def _counts(index: np.ndarray, size: int) -> np.ndarray:
    """(rows, size) multiplicities of each original item in each resample."""
    rows = index.shape[0]
    flat = (index + np.arange(rows)[:, None] * size).reshape(-1)
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


def _check_options(alpha: float, method: str) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1) (0.05 gives a 95% interval); got {alpha!r}")
    if method not in METHODS:
        raise UsageError(f"bootstrap method must be one of {METHODS}; got {method!r}")
