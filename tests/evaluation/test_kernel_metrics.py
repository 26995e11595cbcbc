"""KID and CMMD against naive double loops, closed forms and the CMMD reference formula."""

import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.evaluation.kernel_metrics import (
    PolynomialKernel,
    RbfKernel,
    _subset_mmd2_full_kernel,
    _subset_mmd2_gathered,
    cmmd,
    cmmd_ci,
    kid,
    kid_ci,
    mmd2,
    mmd2_weighted,
)


def naive_mmd2_u(x, y, k):
    """Gretton et al. (2012) eq. 3, written as explicit loops over index pairs."""
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def cubic(dim):
    return lambda p, q: (p @ q / dim + 1) ** 3


def reference_cmmd(x, y, sigma=10.0, scale=1000.0):
    """google-research/cmmd distance.mmd: means over all pairs of exp(-|x-y|^2 / (2 sigma^2))."""
    def mean_k(p, q):
        sq = ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2 * sigma**2)).mean()
    return scale * (mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y))


def unit_rows(rng, n, dim, shift=0.0):
    x = rng.standard_normal((n, dim)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mmd2_matches_naive_u_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 6)), rng.standard_normal((17, 6)) + 0.4
    assert mmd2(x, y, PolynomialKernel()) == pytest.approx(naive_mmd2_u(x, y, cubic(6)), rel=1e-12)
    rbf = lambda p, q: np.exp(-np.sum((p - q) ** 2) / (2 * 1.5**2))  # noqa: E731
    assert mmd2(x, y, RbfKernel(1.5)) == pytest.approx(naive_mmd2_u(x, y, rbf), rel=1e-12)


def test_weighted_counts_score_the_resample_without_pairs_of_copies():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3))
    counts_x, counts_y = np.array([[0, 2, 1, 3, 0, 1, 1.0]]), np.array([[1, 0, 4, 0, 2.0]])
    origin_x = np.repeat(np.arange(7), counts_x[0].astype(int))
    origin_y = np.repeat(np.arange(5), counts_y[0].astype(int))
    k = cubic(3)

    def within(points, origin):
        pairs = [(i, j) for i in range(len(origin)) for j in range(len(origin)) if origin[i] != origin[j]]
        return sum(k(points[origin[i]], points[origin[j]]) for i, j in pairs) / len(pairs)
    cross = np.mean([k(x[i], y[j]) for i in origin_x for j in origin_y])
    expected = within(x, origin_x) + within(y, origin_y) - 2 * cross
    assert mmd2_weighted(x, y, PolynomialKernel(), counts_x, counts_y)[0] == pytest.approx(expected, rel=1e-12)
    # Biased (V-statistic) weights: plain MMD over all pairs of the expanded multisets.
    ex, ey = x[origin_x], y[origin_y]
    v_stat = (cubic_matrix(ex, ex).mean() + cubic_matrix(ey, ey).mean() - 2 * cubic_matrix(ex, ey).mean())
    biased = mmd2_weighted(x, y, PolynomialKernel(), counts_x, counts_y, unbiased=False)[0]
    assert biased == pytest.approx(v_stat, rel=1e-12)


def cubic_matrix(p, q):
    return (p @ q.T / p.shape[1] + 1) ** 3


def test_linear_kernel_mmd_estimates_squared_mean_difference():
    # With k(x, y) = <x, y>, MMD^2 = |mu_a - mu_b|^2 exactly, and the U-statistic is unbiased for it.
    rng = np.random.default_rng(2)
    mu_a, mu_b = np.zeros(5), np.array([0.3, -0.2, 0.0, 0.1, 0.2])
    linear = PolynomialKernel(degree=1, gamma=1.0, coef0=0.0)
    draws = [mmd2(rng.standard_normal((50, 5)) + mu_a, rng.standard_normal((50, 5)) + mu_b, linear) for _ in range(400)]
    standard_error = np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(draws) - np.sum((mu_a - mu_b) ** 2)) < 4 * standard_error


def test_kid_near_zero_for_two_halves_and_positive_when_shifted():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2000, 16))
    halves = kid(data[:1000], data[1000:], subset_size=500, subsets=50)
    shifted = kid(data[:1000], data[1000:] + 0.5, subset_size=500, subsets=50)
    assert abs(halves.mean) < 3 * halves.std
    assert shifted.mean > 10 * shifted.std > 0
    assert shifted.mean > 20 * abs(halves.mean)


def test_kid_subset_paths_agree_and_subsets_are_seeded():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((120, 8)), rng.standard_normal((90, 8)) + 0.2
    picks = [(rng.choice(120, 40, replace=False), rng.choice(90, 40, replace=False)) for _ in range(6)]
    full = _subset_mmd2_full_kernel(a, b, PolynomialKernel(), picks)
    gathered = _subset_mmd2_gathered(a, b, PolynomialKernel(), picks)
    np.testing.assert_allclose(full, gathered, rtol=1e-10, atol=1e-12)
    assert np.allclose(gathered, [naive_mmd2_u(a[i], b[j], cubic(8)) for i, j in picks], rtol=1e-10)
    assert kid(a, b, subset_size=40, subsets=6, seed=1) == kid(a, b, subset_size=40, subsets=6, seed=1)
    assert kid(a, b, subset_size=40, subsets=6, seed=1) != kid(a, b, subset_size=40, subsets=6, seed=2)


def test_kid_subset_size_is_capped_by_the_smaller_set():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((60, 4)), rng.standard_normal((80, 4))
    result = kid(a, b, subset_size=1000, subsets=3)
    assert result.subset_size == 60
    # Each subset is all of a and 60 of b's 80, so only b's choice varies.
    assert result.std > 0
    whole = kid(a, b[:60], subset_size=1000, subsets=3)
    assert whole.std == pytest.approx(0.0, abs=1e-12)
    assert whole.mean == pytest.approx(mmd2(a, b[:60], PolynomialKernel()), rel=1e-10)


def test_kid_ci_estimate_is_full_set_kid():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((150, 6)), rng.standard_normal((150, 6)) + 0.3
    interval = kid_ci(a, b, n_boot=300, seed=0)
    assert interval.estimate == pytest.approx(kid(a, b, subset_size=150, subsets=2).mean, rel=1e-10)
    assert interval.low < interval.estimate < interval.high


def test_cmmd_matches_reference_formula_when_biased():
    rng = np.random.default_rng(7)
    x, y = unit_rows(rng, 40, 12), unit_rows(rng, 30, 12, shift=0.3)
    assert cmmd(x, y, unbiased=False) == pytest.approx(reference_cmmd(x, y), rel=1e-10)


def test_cmmd_identical_sets_zero_biased_and_closed_form_unbiased():
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 50, 16)
    assert cmmd(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-10)
    # U-statistic of a set against itself: the cross term keeps the i = j pairs (k = 1), so
    # CMMD_u(x, x) = -scale * 2 (1 - mean off-diagonal k) / n, slightly negative.
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-sq / 200)
    mean_offdiag = (k.sum() - 50) / (50 * 49)
    assert cmmd(x, x) == pytest.approx(-1000 * 2 * (1 - mean_offdiag) / 50, rel=1e-9)


def test_cmmd_bias_gap_is_documented_formula():
    rng = np.random.default_rng(9)
    x, y = unit_rows(rng, 30, 8), unit_rows(rng, 30, 8, shift=0.5)

    def mean_offdiag(p):
        k = np.exp(-((p[:, None] - p[None]) ** 2).sum(-1) / 200)
        return (k.sum() - len(p)) / (len(p) * (len(p) - 1))
    gap = cmmd(x, y, unbiased=False) - cmmd(x, y)
    assert gap == pytest.approx(1000 * (2 - mean_offdiag(x) - mean_offdiag(y)) / 30, rel=1e-9)


def test_cmmd_near_zero_for_same_distribution_positive_when_shifted_and_scale_free():
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((400, 32)), rng.standard_normal((400, 32))
    same = cmmd(a, b)
    shifted = cmmd(a, b + 0.5)
    assert shifted > 0
    assert abs(same) < 0.05 * shifted
    assert cmmd(3 * a, b + 0.5) == pytest.approx(shifted, rel=1e-10)  # embeddings are L2-normalised
    assert cmmd(torch.from_numpy(a).float(), b + 0.5) == pytest.approx(shifted, rel=1e-5)
    interval = cmmd_ci(a, b + 0.5, n_boot=200)
    assert interval.estimate == pytest.approx(shifted, rel=1e-12)
    assert 0 < interval.low < shifted < interval.high


def test_bad_inputs_and_parameters_raise():
    rng = np.random.default_rng(11)
    a = rng.standard_normal((10, 3))
    with pytest.raises(UsageError, match="subsets must be an integer >= 2"):
        kid(a, a, subsets=1)
    with pytest.raises(UsageError, match="sigma"):
        RbfKernel(0.0)
    with pytest.raises(UsageError, match="all zeros"):
        cmmd(np.zeros((5, 3)), a)
    with pytest.raises(UsageError, match="dim 3 but embeddings_b has dim 4"):
        cmmd(a, rng.standard_normal((10, 4)))
