"""Fréchet distance against closed forms for Gaussians, scipy's sqrtm, and its invariances."""

import warnings

import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.metrics.bootstrap import bootstrap_statistic_ci
from ldmkit.evaluation.frechet import (
    FrechetBiasWarning,
    GaussianStats,
    RankDeficientWarning,
    frechet_distance,
    frechet_distance_ci,
    frechet_distance_extrapolated,
    frechet_distance_from_stats,
    gaussian_stats,
    trace_sqrt_product,
)


def random_spd(rng, dim, scale=1.0):
    m = rng.standard_normal((dim, dim))
    return scale * (m @ m.T / dim + 0.1 * np.eye(dim))


def stats(mean, cov, count=10_000):
    return GaussianStats(mean=np.asarray(mean, float), cov=np.asarray(cov, float), count=count)


def test_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((600, 64)) * np.linspace(0.1, 3, 64)
    fd = frechet_distance(x, x)
    assert abs(fd) <= 1e-9 * np.trace(np.cov(x, rowvar=False))


def test_one_dimensional_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    fd = frechet_distance_from_stats(stats([1.5], [[4.0]]), stats([-0.5], [[0.25]]))
    assert fd == pytest.approx(2.0**2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_commuting_covariances_closed_form():
    # Same eigenvectors: FD = |dm|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    a_eig, b_eig = rng.uniform(0.1, 5, 12), rng.uniform(0.1, 5, 12)
    mu_a, mu_b = rng.standard_normal(12), rng.standard_normal(12)
    fd = frechet_distance_from_stats(stats(mu_a, q @ np.diag(a_eig) @ q.T), stats(mu_b, q @ np.diag(b_eig) @ q.T))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a_eig) - np.sqrt(b_eig)) ** 2)
    assert fd == pytest.approx(expected, rel=1e-10)


def test_identity_against_any_covariance_closed_form():
    # S_a = I: tr sqrt(S_b) = sum sqrt(eig(S_b)), so FD = |dm|^2 + d + tr S_b - 2 sum sqrt(eig S_b).
    rng = np.random.default_rng(2)
    cov_b = random_spd(rng, 20, 3.0)
    mu_b = rng.standard_normal(20)
    fd = frechet_distance_from_stats(stats(np.zeros(20), np.eye(20)), stats(mu_b, cov_b))
    expected = mu_b @ mu_b + 20 + np.trace(cov_b) - 2 * np.sqrt(np.linalg.eigvalsh(cov_b)).sum()
    assert fd == pytest.approx(expected, rel=1e-10)


def test_trace_term_matches_scipy_sqrtm_for_non_commuting_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    cov_a, cov_b = random_spd(rng, 30), random_spd(rng, 30, 2.0)
    reference = np.trace(linalg.sqrtm(cov_a @ cov_b)).real
    assert trace_sqrt_product(cov_a, cov_b) == pytest.approx(reference, rel=1e-9)
    assert trace_sqrt_product(cov_b, cov_a) == pytest.approx(reference, rel=1e-9)


def test_singular_covariance_uses_eigh_factor_and_keeps_closed_form():
    # Cholesky fails on a singular covariance; the eigh fallback must give the same closed form.
    a_eig = np.array([2.0, 0.0, 1.0, 0.0])
    b_eig = np.array([0.5, 3.0, 0.0, 0.0])
    fd = frechet_distance_from_stats(stats(np.zeros(4), np.diag(a_eig)), stats(np.ones(4), np.diag(b_eig)))
    assert fd == pytest.approx(4 + np.sum((np.sqrt(a_eig) - np.sqrt(b_eig)) ** 2), rel=1e-12)


def test_sampled_gaussians_approach_closed_form():
    rng = np.random.default_rng(4)
    dim, n = 4, 40_000
    mu_a, mu_b = np.zeros(dim), np.array([1.0, -0.5, 0.0, 0.3])
    cov_a, cov_b = random_spd(rng, dim), random_spd(rng, dim, 2.0)
    x = rng.multivariate_normal(mu_a, cov_a, size=n)
    y = rng.multivariate_normal(mu_b, cov_b, size=n)
    exact = frechet_distance_from_stats(stats(mu_a, cov_a), stats(mu_b, cov_b))
    assert frechet_distance(x, y) == pytest.approx(exact, rel=0.03)


def test_invariant_to_shared_rotation_and_translation_and_symmetric():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10))
    y = rng.standard_normal((300, 10)) + 0.5
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    shift = rng.standard_normal(10) * 5
    fd = frechet_distance(x, y)
    assert frechet_distance(x @ q + shift, y @ q + shift) == pytest.approx(fd, rel=1e-9)
    assert frechet_distance(y, x) == pytest.approx(fd, rel=1e-9)


def test_torch_input_matches_numpy():
    x = torch.randn(200, 8, dtype=torch.float32)
    y = torch.randn(150, 8) + 0.2
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(x.double().numpy(), y.double().numpy()), rel=1e-12)


def test_fewer_samples_than_dims_warns_and_still_returns_a_finite_value():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((50, 80)), rng.standard_normal((50, 80))
    with pytest.warns(RankDeficientWarning, match="rank <= 49 < 80"):
        fd = frechet_distance(x, y)
    assert np.isfinite(fd) and fd > 0
    with pytest.warns(RankDeficientWarning):
        assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficientWarning)
        frechet_distance(rng.standard_normal((81, 80)), rng.standard_normal((81, 80)))


def test_ridge_adds_to_both_covariances():
    a, b = stats(np.zeros(3), np.diag([1.0, 0.0, 2.0])), stats(np.zeros(3), np.diag([0.0, 1.0, 2.0]))
    ridged = frechet_distance_from_stats(a, b, ridge=0.5)
    plus = frechet_distance_from_stats(stats(np.zeros(3), np.diag([1.5, 0.5, 2.5])),
                                       stats(np.zeros(3), np.diag([0.5, 1.5, 2.5])))
    assert ridged == pytest.approx(plus, rel=1e-12)


def test_gaussian_stats_match_numpy():
    x = np.random.default_rng(7).standard_normal((40, 5))
    s = gaussian_stats(x)
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.cov, np.cov(x, rowvar=False), rtol=1e-12)
    assert s.count == 40


def test_bad_inputs_raise_usage_errors():
    rng = np.random.default_rng(8)
    with pytest.raises(UsageError, match="dim 4 but features_b has dim 5"):
        frechet_distance(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    bad = rng.standard_normal((10, 4))
    bad[3, 2] = np.nan
    with pytest.raises(UsageError, match=r"index \(3, 2\)"):
        frechet_distance(bad, bad)
    with pytest.raises(UsageError, match="at least 2 rows"):
        frechet_distance(bad[:1], bad[:1])
    with pytest.raises(UsageError, match="symmetric"):
        GaussianStats(mean=np.zeros(2), cov=np.array([[1.0, 0.5], [0.0, 1.0]]), count=5)
    with pytest.raises(UsageError, match="ridge"):
        frechet_distance_from_stats(stats([0.0], [[1.0]]), stats([0.0], [[1.0]]), ridge=-1)


def test_ci_is_deterministic_and_brackets_the_spread():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((200, 3)), rng.standard_normal((200, 3)) + 1.0
    first = frechet_distance_ci(x, y, n_boot=200, seed=1)
    assert first == frechet_distance_ci(x, y, n_boot=200, seed=1)
    assert first.estimate == pytest.approx(frechet_distance(x, y), rel=1e-12)
    assert first.low < first.estimate < first.high  # far-apart sets: the small-sample bias is negligible
    assert frechet_distance_ci(x, y, n_boot=200, seed=2) != first


@pytest.mark.parametrize("n, dim, ridge, collinear", [
    (300, 20, 0.0, False),   # Cholesky factors
    (300, 20, 0.0, True),    # singular covariance with many rows: eigh factor
    (15, 40, 0.0, False),    # the centred data as factor (an n x n problem)
    (45, 40, 0.0, False),    # data factor with n > dim
    (15, 40, 0.3, False),    # ridge: always through the covariance
])
def test_data_factor_route_equals_covariance_route(n, dim, ridge, collinear):
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((n, dim)) * rng.uniform(0.2, 2, dim), rng.standard_normal((n + 3, dim)) + 0.1
    if collinear:
        x[:, -1] = 2 * x[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        from_data = frechet_distance(x, y, ridge=ridge)
        from_stats = frechet_distance_from_stats(gaussian_stats(x), gaussian_stats(y), ridge=ridge)
    assert from_data == pytest.approx(from_stats, rel=1e-9)


def test_weighted_resamples_equal_resampled_rows():
    # frechet_distance_ci scores a resample by counts; the same resamples as repeated rows agree.
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((60, 5)), rng.standard_normal((50, 5)) + 0.5
    by_counts = frechet_distance_ci(x, y, n_boot=50, seed=3, method="percentile")
    by_rows = bootstrap_statistic_ci(frechet_distance, x, y, n_boot=50, seed=3)
    assert by_counts == pytest.approx(by_rows, rel=1e-9)


def test_basic_interval_covers_true_fd_where_percentile_does_not():
    # Resamples carry about twice FD's small-sample bias: percentile intervals sit above the truth,
    # basic intervals (reflected around the estimate) correct that to first order.
    rng = np.random.default_rng(12)
    dim, n, shift, scale = 16, 100, 0.3, 1.3
    true_fd = dim * shift**2 + dim * (1 - scale) ** 2
    basic = percentile = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrechetBiasWarning)
        for repetition in range(50):
            x, y = rng.standard_normal((n, dim)), shift + scale * rng.standard_normal((n, dim))
            b = frechet_distance_ci(x, y, n_boot=200, seed=repetition)
            p = frechet_distance_ci(x, y, n_boot=200, seed=repetition, method="percentile")
            basic += b.low <= true_fd <= b.high
            percentile += p.low <= true_fd <= p.high
    assert basic / 50 >= 0.85
    assert percentile / 50 <= 0.5


def test_bias_dominated_fd_warns():
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((100, 16)), rng.standard_normal((100, 16))  # true FD 0, estimate ~2.6
    with pytest.warns(FrechetBiasWarning, match="lies outside its basic bootstrap interval"):
        frechet_distance_ci(x, y, n_boot=200)


def test_extrapolated_fd_removes_the_small_sample_bias_and_its_interval_covers_the_truth():
    """Gaussians with a known FD: the plug-in FD at 400 vs 400 samples of dim 16 is ~0.45 too high, FD-infinity
    lands on the truth, and two samples of one distribution extrapolate to an interval holding 0."""
    dim = 16
    scale, shift = np.linspace(0.5, 2, dim), np.full(dim, 0.1)
    truth = shift @ shift + np.sum(1 + scale - 2 * np.sqrt(scale))
    plug_in, extrapolated = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        a, b = rng.standard_normal((400, dim)), shift + rng.standard_normal((400, dim)) * np.sqrt(scale)
        fit = frechet_distance_extrapolated(a, b, seed=seed)
        assert fit.low < truth < fit.high and fit.slope > 0
        assert [p[:2] for p in fit.points] == [(240, 240), (280, 280), (320, 320), (360, 360), (400, 400)]
        same = frechet_distance_extrapolated(a, rng.standard_normal((400, dim)), seed=seed)
        assert same.low < 0 < same.high
        plug_in.append(frechet_distance(a, b))
        extrapolated.append(fit.estimate)
    assert np.mean(plug_in) > truth + 0.3
    assert abs(np.mean(extrapolated) - truth) < 0.1


def test_extrapolated_fd_interval_is_as_wide_as_the_estimates_spread():
    """Over 30 data sets the half-sampling interval's half-width / 1.96 matches the estimates' own spread (within
    1.5x either way: the interval is neither too narrow nor padded) and covers the truth about 95% of the time."""
    dim = 8
    shift = np.full(dim, 0.2)
    truth = shift @ shift
    estimates, widths, covered = [], [], 0
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        fit = frechet_distance_extrapolated(rng.standard_normal((300, dim)), shift + rng.standard_normal((300, dim)),
                                            seed=seed)
        estimates.append(fit.estimate)
        widths.append((fit.high - fit.low) / 2 / 1.96)
        covered += fit.low < truth < fit.high
    ratio = np.mean(widths) / np.std(estimates, ddof=1)
    assert 1 / 1.5 < ratio < 1.5, ratio
    assert covered >= 25, covered


def test_extrapolated_fd_refuses_small_subsets_and_bad_options():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((60, 16)), rng.standard_normal((60, 16))
    with pytest.raises(UsageError, match="at least 32 samples .* holds 18"):
        frechet_distance_extrapolated(a, b)
    a, b = rng.standard_normal((200, 16)), rng.standard_normal((200, 16))
    for options, message in (({"fractions": (1.0,)}, "two distinct"), ({"fractions": (0.5, 1.5)}, r"\(0, 1\]"),
                             ({"fractions": (1.0, float("nan"), 0.5)}, "two distinct"),
                             ({"fractions": "0.5"}, "sequence of numbers"), ({"fractions": 0.5}, "sequence of numbers"),
                             ({"fractions": (0.9991, 0.9999)}, "one subset size"),
                             ({"draws": 0}, "draws"), ({"draws": 101}, r"draws must be an integer in \[1, 100\]"),
                             ({"halves": 5}, r"halves must be an integer in \[10, 1000\]"),
                             ({"seed": -1}, "seed"), ({"alpha": 1.0}, "alpha"), ({"alpha": "0.05"}, "alpha")):
        with pytest.raises(UsageError, match=message):
            frechet_distance_extrapolated(a, b, **options)


def test_the_extrapolation_check_script_recovers_its_known_fd():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fd_extrapolation_check.py"
    spec = importlib.util.spec_from_file_location("fd_extrapolation_check", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main(dim=16, n=400, datasets=6)
    assert result["plug_in"] - result["truth"] > 0.015                  # the plug-in FD's bias: 0.022 of a 0.009 FD
    assert abs(result["fd_inf"] - result["truth"]) < 0.005 and abs(result["same_fd_inf"]) < 0.003
    assert result["covered"] >= 5 and result["holds_zero"] >= 5
    with pytest.raises(UsageError, match="datasets"):
        script.main(dim=8, n=400, datasets=1)
