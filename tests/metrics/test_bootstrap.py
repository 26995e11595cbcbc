"""Percentile bootstrap: coverage of the true mean, agreement of its three forms, determinism."""

import numpy as np
import pytest

from ldmkit.errors import UsageError
from ldmkit.metrics import bootstrap
from ldmkit.metrics.bootstrap import bootstrap_ci, bootstrap_counts_ci, bootstrap_statistic_ci


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_mean, repetitions = 3.0, 200
    covered = 0
    for repetition in range(repetitions):
        sample = rng.normal(true_mean, 2.0, size=100)
        _, low, high = bootstrap_ci(sample, n_boot=1000, seed=repetition)
        covered += low <= true_mean <= high
    assert 0.9 <= covered / repetitions <= 0.99


def test_alpha_sets_the_width():
    sample = np.random.default_rng(1).normal(size=100)
    wide, narrow = bootstrap_ci(sample, alpha=0.01), bootstrap_ci(sample, alpha=0.32)
    assert wide.low < narrow.low < narrow.high < wide.high
    # A 68% interval of a mean is about +- one standard error.
    half_width = (narrow.high - narrow.low) / 2
    assert half_width == pytest.approx(sample.std(ddof=1) / np.sqrt(100), rel=0.15)


def test_three_forms_draw_the_same_resamples():
    values = np.random.default_rng(2).exponential(size=80)
    plain = bootstrap_ci(values, n_boot=300, seed=5)
    statistic = bootstrap_statistic_ci(np.mean, values, n_boot=300, seed=5)
    counts = bootstrap_counts_ci(lambda c: c @ values / len(values), len(values), n_boot=300, seed=5)
    assert plain.estimate == pytest.approx(values.mean())
    for other in (statistic, counts):
        assert other == pytest.approx(plain, rel=1e-12)


def test_two_sample_statistic_resamples_each_set_and_is_chunk_size_free(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 120), rng.normal(0.0, 1.0, 90)
    difference = lambda x, y: x.mean() - y.mean()  # noqa: E731
    interval = bootstrap_statistic_ci(difference, a, b, n_boot=400, seed=0)
    standard_error = np.sqrt(a.var(ddof=1) / 120 + b.var(ddof=1) / 90)
    assert (interval.high - interval.low) / 2 == pytest.approx(1.96 * standard_error, rel=0.15)
    monkeypatch.setattr(bootstrap, "MAX_CHUNK_ENTRIES", 500)  # 2 replicates per chunk
    assert bootstrap_statistic_ci(difference, a, b, n_boot=400, seed=0) == interval


def test_basic_interval_reflects_percentile_around_the_estimate():
    values = np.random.default_rng(4).exponential(size=50)
    percentile = bootstrap_ci(values, n_boot=400, seed=1)
    basic = bootstrap_ci(values, n_boot=400, seed=1, method="basic")
    assert basic.estimate == percentile.estimate
    assert basic.low == pytest.approx(2 * percentile.estimate - percentile.high)
    assert basic.high == pytest.approx(2 * percentile.estimate - percentile.low)


def test_seed_determinism_and_bad_arguments():
    values = np.arange(30.0)
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    with pytest.raises(UsageError, match="alpha"):
        bootstrap_ci(values, alpha=1.5)
    with pytest.raises(UsageError, match="n_boot"):
        bootstrap_ci(values, n_boot=1)
    with pytest.raises(UsageError, match="method"):
        bootstrap_ci(values, method="bca")
    with pytest.raises(UsageError, match="not finite"):
        bootstrap_statistic_ci(lambda x: np.nan, values, n_boot=10)


def test_paired_difference_resamples_the_pairs_together():
    from ldmkit.metrics.bootstrap import paired_difference_ci

    def mean_gap(x, counts_x, ref, counts_ref):        # weighted mean of x minus weighted mean of the reference
        return counts_x @ x / counts_x.sum(1) - counts_ref @ ref / counts_ref.sum(1)

    rng = np.random.default_rng(2)
    a, ref = rng.normal(0, 1, 400), rng.normal(0, 1, 300)
    b = a + 0.05 + rng.normal(0, 0.01, 400)            # the same inputs, shifted a little
    paired = paired_difference_ci(mean_gap, a, b, ref, n_boot=500, seed=0)
    assert np.isclose(paired.estimate, b.mean() - a.mean())
    assert 0.04 < paired.low < paired.estimate < paired.high < 0.06
    # each alone varies by ~0.1 (which inputs, which references were drawn): separate intervals would overlap
    alone_a = bootstrap_counts_ci(lambda w, r: mean_gap(a, w, ref, r), 400, 300, n_boot=500, seed=0)
    alone_b = bootstrap_counts_ci(lambda w, r: mean_gap(b, w, ref, r), 400, 300, n_boot=500, seed=0)
    assert alone_b.low < alone_a.high
    with pytest.raises(UsageError, match="paired sets of one size"):
        paired_difference_ci(mean_gap, a, b[:-1], ref)
