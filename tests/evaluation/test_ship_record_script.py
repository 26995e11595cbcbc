"""scripts/ship_record.py (the eval record a shipped default model carries in ldmkit.json): each eval folder's own
settings and numbers, the paired difference of model_gap.py --json, the root's other reports; bad roots refused."""

import importlib.util
import json
from pathlib import Path

import pytest

from ldmkit.evaluation.run import EvalSettings, evaluate

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)
record = fx.load_script("ship_record")

GAP = {"images": 1000, "difference": {"estimate": 0.04812, "low": 0.03571, "high": 0.05943}}  # model_gap --json


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("record")
    model, data = fx.tiny_model(base / "model", with_clip=True), fx.shapes_data(base / "shapes")
    evals = base / "evals"
    metrics = evaluate(EvalSettings(model=model, data=data, out=evals / "shapes", n=5, steps=2, guidance=3.0,
                                    clip=model, seeds=(2,), seed_per_image=True, n_boot=20))
    (evals / "vs-base-shapes.json").write_text(json.dumps(GAP))
    (evals / "vs-base-shapes.txt").write_text("the same, as text\n")
    (evals / "gap.txt").write_text("free: 0.5\n")
    return evals, metrics


def test_each_eval_is_recorded_with_its_own_numbers(root, tmp_path, capsys):
    evals, metrics = root
    out = tmp_path / "issue17.json"
    assert record.main([str(out), "--what", "a test", str(evals)]) == 0
    written = json.loads(out.read_text())
    (run,) = written["runs"]
    own = metrics["conditions"][0]["metrics"]
    assert written["what"] == "a test" and run["set"] == "shapes" and run["n"] == 5
    assert run["settings"] == {"sampler": metrics["conditions"][0]["images"][0]["sampler"], "steps": 2,
                               "guidance": 3.0, "seeds": [2], "seed_per_image": True}
    assert run["retrieval_top1"] == pytest.approx(own["retrieval_top1"]["estimate"], rel=1e-3)
    assert run["kid"] == pytest.approx(own["kid"]["estimate"], rel=1e-3)
    assert run["paired_vs_base"] == [0.04812, 0.03571, 0.05943]
    assert written["reports"] == {(evals / "gap.txt").as_posix(): "free: 0.5\n"}
    assert "1 runs" in capsys.readouterr().out
    assert "vae_round_trip_accuracy" not in run  # shapes: no avatars to score


def test_the_vae_round_trip_ceiling_is_recorded_where_measured(root, tmp_path):
    evals, metrics = root
    copy = tmp_path / "evals" / "avatars"
    copy.mkdir(parents=True)
    ceiling = {"estimate": 0.89564, "low": 0.87513, "high": 0.91328}
    metrics = {**metrics, "reference": {**metrics.get("reference", {}),
                                        "vae_round_trip": {"avatars": {"all": {"mean": ceiling}}}}}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert record.run_record(copy, copy.parent)["vae_round_trip_accuracy"] == [0.8956, 0.8751, 0.9133]


def test_fd_infinity_is_recorded_with_its_interval_where_the_eval_measured_it(root, tmp_path):
    evals, metrics = root
    assert "fd_inf" not in record.run_record(evals / "shapes", evals)  # 5 images: too few to extrapolate
    copy = tmp_path / "evals" / "fresh"
    copy.mkdir(parents=True)
    (condition,) = metrics["conditions"]
    fd_inf = {"estimate": 0.019912, "low": 0.012731, "high": 0.027093}
    condition = {**condition, "metrics": {**condition["metrics"], "fd_inf": fd_inf}}
    (copy / "metrics.json").write_text(json.dumps({**metrics, "conditions": [condition]}))
    assert record.run_record(copy, copy.parent)["fd_inf"] == [0.01991, 0.01273, 0.02709]


def test_an_existing_file_and_an_empty_root_are_refused(root, tmp_path, capsys):
    evals, _ = root
    taken = tmp_path / "taken.json"
    taken.write_text("keep me")
    assert record.main([str(taken), "--what", "x", str(evals)]) == 2
    assert taken.read_text() == "keep me" and "exists" in capsys.readouterr().err
    out = tmp_path / "new.json"
    assert record.main([str(out), "--what", "x", str(evals), str(tmp_path)]) == 2
    assert not out.exists() and "holds no eval folder" in capsys.readouterr().err


def test_unbounded_inputs_are_refused_before_anything_is_written(root, tmp_path, capsys):
    evals, _ = root
    out = tmp_path / "bounded.json"
    for what in ("", "x" * (record.MAX_WHAT + 1)):
        assert record.main([str(out), "--what", what, str(evals)]) == 2
        assert "--what must be" in capsys.readouterr().err
    assert record.main([str(out), "--what", "x", *[str(evals)] * (record.MAX_ROOTS + 1)]) == 2
    assert "at most" in capsys.readouterr().err
    big = tmp_path / "big"
    big.mkdir()
    for folder in sorted(p.parent for p in evals.glob("*/metrics.json"))[:1]:
        (big / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    (big / "notes.txt").write_bytes(b"x" * (record.MAX_REPORT_BYTES + 1))
    assert record.main([str(out), "--what", "x", str(big)]) == 2
    assert "over" in capsys.readouterr().err and not out.exists()
