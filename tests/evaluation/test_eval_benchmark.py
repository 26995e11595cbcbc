"""The metrics benchmark runs end to end at toy size (its timings are not checked here)."""

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_metrics.py"


def test_benchmark_main_runs_at_toy_size(capsys):
    spec = importlib.util.spec_from_file_location("eval_metrics_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dims", "12", "--n", "40", "--n-boot", "20", "--fd-boot", "5", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for metric in ("FD", "KID 95% CI", "CMMD", "CLIP score", "prompt retrieval", "cross-modal R@1/5/10"):
        assert metric in out
    assert "all dims, all metrics with CIs" in out
