"""scripts/fidelity_gap.py (issue 17's ship rule): B - A of FD, KID and CMMD, two evals' images paired by prompt
and seed against the same references."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ldmkit.errors import UsageError
from ldmkit.evaluation.run import EvalSettings, evaluate

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def test_two_evals_of_one_prompt_set_are_compared_pair_by_pair(tmp_path, capsys, one_thread):
    model, data = fx.tiny_model(tmp_path / "model", with_clip=True), fx.shapes_data(tmp_path / "shapes")

    def run(name: str, **options) -> Path:
        settings = dict(model=model, data=data, out=tmp_path / name, n=8, steps=1, clip=model, n_boot=20,
                        seed_per_image=True)
        evaluate(EvalSettings(**{**settings, **options}))
        return tmp_path / name

    a, b = run("a"), run("b", steps=3)
    fewer = tmp_path / "fewer"                               # an eval of another --n, as its metrics.json says
    shutil.copytree(a, fewer)
    metrics = json.loads((fewer / "metrics.json").read_text())
    metrics["settings"]["n"] = 6
    (fewer / "metrics.json").write_text(json.dumps(metrics))
    script = fx.load_script("fidelity_gap")
    diff = script.main(a, b, n_boot=50)
    lines = capsys.readouterr().out.splitlines()
    same = script.main(a, a, n_boot=50)
    capsys.readouterr()
    with pytest.raises(UsageError, match="the evals differ in n;"):
        script.main(a, fewer)
    with pytest.raises(UsageError, match="not an `ldmkit eval` run"):
        script.main(a, tmp_path)
    first = b / json.loads((b / "metrics.json").read_text())["conditions"][0]["images"][0]["file"]
    first.write_bytes(b"not a png")
    with pytest.raises(UsageError, match="an image the eval wrote cannot be read"):
        script.main(a, b)
    assert lines[2] == f"8 image pairs vs {diff['sizes'][1]} real images"
    fd_line = next(line for line in lines if line.startswith("FD "))
    fd_a, fd_b = (float(fd_line.split(f" {side} ")[1].split()[0]) for side in ("A", "B"))
    assert fd_a != fd_b                                       # one sampling step vs three: other images
    assert np.isclose(diff["fd"]["estimate"], fd_b - fd_a, atol=2e-5)       # printed to 5 digits
    assert f"B - A {diff['fd']['estimate']:+.5g} [" in fd_line
    assert [line.split()[0] for line in lines[3:]] == ["FD", "KID", "CMMD"]
    assert all(same[k] == {"estimate": 0.0, "low": 0.0, "high": 0.0} for k in ("fd", "kid", "cmmd"))


def test_the_verdict_reads_the_interval():
    script = fx.load_script("fidelity_gap")
    assert script.verdict({"low": 0.001, "high": 0.01}).startswith("B further")
    assert script.verdict({"low": -0.01, "high": -0.001}).startswith("B closer")
    assert script.verdict({"low": -0.01, "high": 0.01}).startswith("not separated")
