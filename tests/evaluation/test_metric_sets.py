"""The fidelity group of `ldmkit eval`: FD-infinity beside FD / KID / CMMD, and its note where the sets are too small."""

import numpy as np

from ldmkit.evaluation.frechet import frechet_distance_extrapolated
from ldmkit.evaluation.metric_sets import fidelity_difference, fidelity_metrics
from ldmkit.evaluation.report import _metric_table


def test_fd_infinity_is_reported_with_its_interval_where_the_sets_are_large_enough():
    rng = np.random.default_rng(3)
    dim = 8
    shift = np.full(dim, 0.3)
    gen, real = shift + rng.standard_normal((240, dim)), rng.standard_normal((260, dim))
    notes = []
    result = fidelity_metrics(gen, real, n_boot=50, seed=4, notes=notes)
    expected = frechet_distance_extrapolated(gen, real, seed=4)
    assert result["fd_inf"] == {"estimate": expected.estimate, "low": expected.low, "high": expected.high}
    # the plug-in FD carries the small-sample bias FD-infinity removes; the truth (0.72) lies in FD-infinity's interval
    assert result["fd"]["estimate"] > result["fd_inf"]["estimate"]
    assert result["fd_inf"]["low"] < shift @ shift < result["fd_inf"]["high"]
    assert not any("infinity" in note for note in notes)
    skipped = fidelity_metrics(gen, real, n_boot=50, seed=4, notes=notes, extrapolate=False)  # fd_floor fits its own
    assert "fd_inf" not in skipped and skipped["fd"] == result["fd"] and not notes


def test_fd_infinity_is_left_out_with_a_note_when_the_sets_are_too_small():
    rng = np.random.default_rng(5)
    notes = []
    result = fidelity_metrics(rng.standard_normal((40, 8)), rng.standard_normal((40, 8)), n_boot=50, seed=0,
                              notes=notes)
    assert "fd_inf" not in result and {"fd", "kid", "cmmd"} <= set(result)
    assert any(note.startswith("FD-infinity skipped at sizes 40 vs 40: FD extrapolation needs at least 16 samples")
               for note in notes), notes


def test_the_report_table_has_an_fd_infinity_column():
    ci = {"estimate": 0.012, "low": 0.005, "high": 0.019}
    metrics = {"reference": {}, "conditions": [{"label": "guidance=5.0", "metrics": {"fd_inf": ci}}]}
    table = _metric_table(metrics)
    assert "<th>FD-infinity</th>" in table and "0.012 [0.005, 0.019]" in table


def test_fidelity_difference_pairs_the_prompts_so_shared_noise_cancels():
    from ldmkit.evaluation.frechet import frechet_distance, frechet_distance_ci
    from ldmkit.evaluation.kernel_metrics import cmmd, cmmd_ci, kid_ci

    rng = np.random.default_rng(7)
    dim = 6
    real = rng.standard_normal((300, dim))
    gen_a = 0.2 + rng.standard_normal((200, dim))
    gen_b = gen_a + 0.1                     # B: A's images of the same prompts, each a little further off
    diff = fidelity_difference(gen_a, gen_b, real, n_boot=200, seed=1)
    assert diff["sizes"] == [200, 300]
    assert np.isclose(diff["fd"]["estimate"], frechet_distance(gen_b, real) - frechet_distance(gen_a, real))
    assert np.isclose(diff["cmmd"]["estimate"], cmmd(gen_b, real) - cmmd(gen_a, real))
    for key in ("fd", "kid", "cmmd"):
        assert 0 < diff[key]["low"] <= diff[key]["estimate"] <= diff[key]["high"], (key, diff[key])
    # unpaired, the two models' own intervals overlap: the same difference would not be seen
    for metric in (frechet_distance_ci, kid_ci, cmmd_ci):
        own_a, own_b = metric(gen_a, real, n_boot=200, seed=1), metric(gen_b, real, n_boot=200, seed=1)
        assert own_b.low < own_a.high, metric.__name__
    swapped = fidelity_difference(gen_b, gen_a, real, n_boot=200, seed=1)
    assert np.isclose(swapped["kid"]["estimate"], -diff["kid"]["estimate"])
    same = fidelity_difference(gen_a, gen_a.copy(), real, n_boot=50, seed=1)
    assert all(same[k] == {"estimate": 0.0, "low": 0.0, "high": 0.0} for k in ("fd", "kid", "cmmd"))


def test_fidelity_difference_needs_pairs_of_one_feature_space():
    import pytest

    from ldmkit.errors import UsageError

    rng = np.random.default_rng(0)
    real = rng.standard_normal((50, 4))
    with pytest.raises(UsageError, match="paired sets of one size; got 40 and 39"):
        fidelity_difference(real[:40], real[:39], real, n_boot=10, seed=0)
    with pytest.raises(UsageError, match="has dim 4 but real_emb has dim 3"):
        fidelity_difference(real[:40], real[:40], real[:, :3], n_boot=10, seed=0)
