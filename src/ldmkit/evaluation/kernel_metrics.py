"""Kernel two-sample distances: KID (Binkowski et al. 2018) and CMMD (Jayasumana et al. 2024).

Both are the squared maximum mean discrepancy (Gretton et al. 2012, eq. 3 for the unbiased
U-statistic) between two feature sets under a fixed kernel:

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 sum_{i,j} k(x_i, y_j) / (mn)

Everything is computed from *weighted* kernel sums: a weight vector says how often each item
appears (1 for the data, 0/1 for a subset, a multinomial count for a bootstrap resample). Pairs of
copies of the same item are left out of the within-set sums, so a resample with repeats is scored
by the same U-statistic rather than being biased upward by k(x, x) terms. Many weight vectors are
scored with one kernel evaluation, blockwise, which makes KID's 100 subsets and 1000 bootstrap
replicates cost a few matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.bootstrap import ConfidenceInterval, bootstrap_counts_ci
from ldmkit.metrics.feature_arrays import as_matrix, l2_normalize, same_dim

ROW_BLOCK = 1024  # kernel rows evaluated at once: memory ROW_BLOCK x (other set size) floats


@dataclass(frozen=True)
class PolynomialKernel:
    """k(x, y) = (gamma <x, y> + coef0) ** degree; the defaults are KID's cubic kernel."""

    degree: int = 3
    """Polynomial degree (KID: 3)."""
    gamma: float | None = None
    """Scale of the inner product; None means 1 / dim (KID)."""
    coef0: float = 1.0
    """Constant added before the power (KID: 1)."""

    def __post_init__(self):
        if isinstance(self.degree, bool) or not isinstance(self.degree, Integral) or self.degree < 1:
            raise UsageError(f"PolynomialKernel.degree must be an integer >= 1; got {self.degree!r}")
        if self.gamma is not None and not self.gamma > 0:
            raise UsageError(f"PolynomialKernel.gamma must be > 0 or None (= 1/dim); got {self.gamma!r}")

    def matrix(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(len(x), len(y)) kernel values."""
        return (self._gamma(x) * (x @ y.T) + self.coef0) ** self.degree

    def diagonal(self, x: np.ndarray) -> np.ndarray:
        """k(x_i, x_i) for every row."""
        return (self._gamma(x) * np.einsum("ij,ij->i", x, x) + self.coef0) ** self.degree

    def _gamma(self, x: np.ndarray) -> float:
        return 1.0 / x.shape[1] if self.gamma is None else self.gamma


@dataclass(frozen=True)
class RbfKernel:
    """k(x, y) = exp(-|x - y|^2 / (2 sigma^2)), the Gaussian kernel; sigma=10 is CMMD's."""

    sigma: float = 10.0
    """Bandwidth (CMMD: 10, on unit-norm CLIP embeddings)."""

    def __post_init__(self):
        if not self.sigma > 0:
            raise UsageError(f"RbfKernel.sigma must be > 0; got {self.sigma!r}")

    def matrix(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        squared = np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :] - 2 * (x @ y.T)
        return np.exp(-np.clip(squared, 0.0, None) / (2 * self.sigma**2))

    def diagonal(self, x: np.ndarray) -> np.ndarray:
        return np.ones(len(x))


@dataclass(frozen=True)
class KidResult:
    """KID as the mean and spread of MMD^2_u over random subsets (Binkowski et al. 2018, sec. 4)."""

    mean: float
    """Mean unbiased MMD^2 over the subsets: the KID value."""
    std: float
    """Sample standard deviation (ddof=1) over the subsets, the spread the paper reports."""
    subset_size: int
    """Items drawn (without replacement) from each set per subset, min(requested, len(a), len(b))."""
    subsets: int
    """How many subsets were averaged."""

    def __post_init__(self):
        if self.subset_size < 2 or self.subsets < 2:
            raise UsageError(f"KidResult needs subset_size >= 2 and subsets >= 2; "
                             f"got {self.subset_size}, {self.subsets}")


def mmd2_weighted(x: np.ndarray, y: np.ndarray, kernel, weights_x: np.ndarray, weights_y: np.ndarray, *,
                  unbiased: bool = True) -> np.ndarray:
    """MMD^2 of x repeated weights_x[r] times vs y repeated weights_y[r] times, for every row r.

    weights_*: (rows, len(set)) non-negative counts. unbiased=True leaves out pairs of copies of the
    same item (the U-statistic); unbiased=False averages over all pairs (the V-statistic).
    """
    weights_x, weights_y = np.atleast_2d(weights_x), np.atleast_2d(weights_y)
    if weights_x.shape != (len(weights_y), len(x)) or weights_y.shape[1] != len(y):
        raise UsageError(f"weights of shape {weights_x.shape} and {weights_y.shape} do not match "
                         f"sets of {len(x)} and {len(y)} items")
    within_x = _within_mean(x, kernel, weights_x, unbiased)
    within_y = _within_mean(y, kernel, weights_y, unbiased)
    cross = _quadratic_forms(x, y, kernel, weights_x, weights_y) / (weights_x.sum(1) * weights_y.sum(1))
    return within_x + within_y - 2 * cross


def mmd2(features_a, features_b, kernel, *, unbiased: bool = True) -> float:
    """MMD^2 between two (n, dim) feature sets under kernel (PolynomialKernel, RbfKernel)."""
    a = as_matrix(features_a, "features_a", min_rows=2)
    b = as_matrix(features_b, "features_b", min_rows=2)
    same_dim(a, b, "features_a", "features_b")
    return float(mmd2_weighted(a, b, kernel, np.ones((1, len(a))), np.ones((1, len(b))), unbiased=unbiased)[0])


def kid(features_a, features_b, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0) -> KidResult:
    """Kernel Inception Distance: MMD^2_u with the cubic polynomial kernel (x.y/dim + 1)^3, averaged
    over `subsets` random subsets of `subset_size` items from each set (the paper's defaults: 100
    subsets of 1000). Larger sets than the subset size give a lower-variance estimate of the same value.
    """
    a = as_matrix(features_a, "features_a", min_rows=2)
    b = as_matrix(features_b, "features_b", min_rows=2)
    same_dim(a, b, "features_a", "features_b")
    for value, name, low in ((subset_size, "subset_size", 2), (subsets, "subsets", 2)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise UsageError(f"kid {name} must be an integer >= {low}; got {value!r}")
    size, subsets = int(min(subset_size, len(a), len(b))), int(subsets)
    rng = np.random.default_rng(seed)
    picks = [(rng.choice(len(a), size, replace=False), rng.choice(len(b), size, replace=False))
             for _ in range(subsets)]
    kernel = PolynomialKernel()
    full_cost = (len(a) + len(b)) ** 2 * (a.shape[1] + subsets)  # one kernel pass + weighted sums
    if full_cost <= subsets * (2 * size) ** 2 * a.shape[1]:
        values = _subset_mmd2_full_kernel(a, b, kernel, picks)
    else:
        values = _subset_mmd2_gathered(a, b, kernel, picks)
    return KidResult(mean=float(values.mean()), std=float(values.std(ddof=1)), subset_size=size, subsets=subsets)


def kid_counts(a: np.ndarray, counts_a: np.ndarray, b: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """MMD^2_u with KID's kernel of a repeated counts_a[r] times vs b repeated counts_b[r] times, per row r."""
    return mmd2_weighted(a, b, PolynomialKernel(), counts_a, counts_b)


def kid_ci(features_a, features_b, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> ConfidenceInterval:
    """MMD^2_u with KID's kernel on the full sets, with a percentile-bootstrap interval (both sets
    resampled; a replicate's repeated items form no within-set pairs). The estimate equals
    kid(...).mean when both sets have the same size and are no larger than the subset size."""
    a = as_matrix(features_a, "features_a", min_rows=2)
    b = as_matrix(features_b, "features_b", min_rows=2)
    same_dim(a, b, "features_a", "features_b")
    return bootstrap_counts_ci(lambda wa, wb: kid_counts(a, wa, b, wb), len(a), len(b),
                               n_boot=n_boot, seed=seed, alpha=alpha)


def cmmd(embeddings_a, embeddings_b, *, sigma: float = 10.0, scale: float = 1000.0, unbiased: bool = True) -> float:
    """CMMD (Jayasumana et al. 2024, "Rethinking FID"): scale * MMD^2 with a Gaussian RBF kernel of
    bandwidth sigma on L2-normalised CLIP image embeddings (normalised here).

    Constants as in the paper and its reference code (google-research/cmmd): sigma = 10, scale = 1000.
    unbiased=True gives the U-statistic (pairs i=j left out). The reference code averages over all
    pairs including i=j (the V-statistic, unbiased=False), which is larger by
    scale * (2 - mean_offdiag_k_aa - mean_offdiag_k_bb) / n for equal set sizes n.
    """
    a, b = _normalised_pair(embeddings_a, embeddings_b)
    return float(cmmd_counts(a, np.ones((1, len(a))), b, np.ones((1, len(b))), sigma=sigma, scale=scale,
                             unbiased=unbiased)[0])


def cmmd_counts(a: np.ndarray, counts_a: np.ndarray, b: np.ndarray, counts_b: np.ndarray, *, sigma: float = 10.0,
                scale: float = 1000.0, unbiased: bool = True) -> np.ndarray:
    """CMMD of a repeated counts_a[r] times vs b repeated counts_b[r] times, per row r; a and b must already be
    L2-normalised (cmmd normalises, this does not)."""
    return scale * mmd2_weighted(a, b, RbfKernel(sigma), counts_a, counts_b, unbiased=unbiased)


def cmmd_ci(embeddings_a, embeddings_b, *, sigma: float = 10.0, scale: float = 1000.0, unbiased: bool = True,
            n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> ConfidenceInterval:
    """cmmd(...) with a percentile-bootstrap interval, both sets resampled."""
    a, b = _normalised_pair(embeddings_a, embeddings_b)
    return bootstrap_counts_ci(
        lambda wa, wb: cmmd_counts(a, wa, b, wb, sigma=sigma, scale=scale, unbiased=unbiased),
        len(a), len(b), n_boot=n_boot, seed=seed, alpha=alpha)


def _normalised_pair(embeddings_a, embeddings_b) -> tuple[np.ndarray, np.ndarray]:
    a = as_matrix(embeddings_a, "embeddings_a", min_rows=2)
    b = as_matrix(embeddings_b, "embeddings_b", min_rows=2)
    same_dim(a, b, "embeddings_a", "embeddings_b")
    return l2_normalize(a, "embeddings_a"), l2_normalize(b, "embeddings_b")


def _within_mean(x: np.ndarray, kernel, weights: np.ndarray, unbiased: bool) -> np.ndarray:
    """Weighted mean of k(x_p, x_q) over pairs, per weight row; unbiased leaves out copies of one item."""
    total = _quadratic_forms(x, x, kernel, weights, weights)
    size = weights.sum(axis=1)
    if not unbiased:
        return total / size**2
    squares = weights**2
    # sum_p w_p^2 k(x_p, x_p) covers the pairs (i, i) and the pairs of two copies of one item.
    return (total - squares @ kernel.diagonal(x)) / (size**2 - squares.sum(axis=1))


def _quadratic_forms(x: np.ndarray, y: np.ndarray, kernel, weights_x: np.ndarray, weights_y: np.ndarray) -> np.ndarray:
    """weights_x[r] @ K(x, y) @ weights_y[r] for every row r, evaluating K ROW_BLOCK rows at a time."""
    out = np.zeros(len(weights_x))
    for start in range(0, len(x), ROW_BLOCK):
        block = kernel.matrix(x[start:start + ROW_BLOCK], y)          # (block, len(y))
        out += np.einsum("rb,br->r", weights_x[:, start:start + ROW_BLOCK], block @ weights_y.T)
    return out


def _subset_mmd2_full_kernel(a, b, kernel, picks) -> np.ndarray:
    """MMD^2_u of each subset as 0/1 weights on the full sets: one kernel pass for all subsets."""
    weights_a, weights_b = np.zeros((len(picks), len(a))), np.zeros((len(picks), len(b)))
    for row, (index_a, index_b) in enumerate(picks):
        weights_a[row, index_a] = 1.0
        weights_b[row, index_b] = 1.0
    return mmd2_weighted(a, b, kernel, weights_a, weights_b)


def _subset_mmd2_gathered(a, b, kernel, picks) -> np.ndarray:
    """MMD^2_u of each subset from its own rows: cheaper when the sets are much larger than a subset."""
    ones = np.ones((1, len(picks[0][0])))
    return np.array([mmd2_weighted(a[index_a], b[index_b], kernel, ones, ones)[0] for index_a, index_b in picks])
