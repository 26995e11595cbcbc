"""The fidelity group of `ldmkit eval`: FD-infinity beside FD / KID / CMMD, and its note where the sets are too small."""

import numpy as np

from ldmkit.evaluation.frechet import frechet_distance_extrapolated
from ldmkit.evaluation.metric_sets import fidelity_metrics
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
