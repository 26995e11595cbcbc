"""report.html: opens offline (only local, existing resources), shows every condition and the references."""

import importlib.util
import re
from pathlib import Path

import pytest

from ldmkit.evaluation.report import fmt
from ldmkit.evaluation.run import EvalSettings, evaluate, parse_sweep

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


@pytest.fixture(scope="module")
def report(tmp_path_factory, one_thread_module):
    root = tmp_path_factory.mktemp("report")
    out = root / "out"
    metrics = evaluate(EvalSettings(model=fx.tiny_model(root / "m", with_clip=True), data=fx.shapes_data(root / "d"),
                                    out=out, n=3, seeds=(0,), sweep=parse_sweep("steps=1,2"), n_boot=50))
    return out, (out / "report.html").read_text(encoding="utf-8"), metrics


def test_report_references_only_local_files_that_exist(report):
    out, page, _ = report
    links = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert links, "the report should show images"
    for link in links:
        assert "http" not in link and not link.startswith(("/", "//", "file:")), link
        assert (out / link).is_file(), link
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page


def test_report_shows_grids_plots_and_metric_tables(report):
    out, page, metrics = report
    for condition in metrics["conditions"]:
        assert f"Images: {condition['label']}" in page
        assert all(record["file"] in page for record in condition["images"])
        assert fmt(condition["metrics"]["clip_score"]) in page
    assert "plots/alignment.png" in page and "plots/fidelity.png" in page and (out / "plots" / "fidelity.png").is_file()
    assert "real-vs-real floor" in page and "Shapes attribute accuracy" in page
    assert metrics["environment"]["model_hash"] in page


def test_fmt_shows_estimate_and_interval():
    assert fmt({"estimate": 1.5, "low": 1.0, "high": 2.25}) == "1.5 [1, 2.25]"
    assert fmt(None) == "–"


def test_plots_survive_an_estimate_outside_its_interval(report, tmp_path):
    """FD's small-sample bias can put the estimate outside its bootstrap interval (a note says so); the
    plot must still be drawn (matplotlib refuses negative error bars), seen on the default model's eval."""
    import copy

    from ldmkit.evaluation.report import write_report

    _, _, metrics = report
    metrics = copy.deepcopy(metrics)
    for condition in metrics["conditions"]:
        for value in condition["metrics"].values():
            if isinstance(value, dict) and "estimate" in value:
                value["low"], value["high"] = value["estimate"] + 1.0, value["estimate"] + 2.0
    page = write_report(metrics, tmp_path).read_text(encoding="utf-8")
    assert "<img" in page and any(tmp_path.rglob("*.png"))
