"""scripts/retrieval_gap.py (issue 17's taught-emoji comparison): the images read back and scored again give each
run's own retrieval numbers and CLIP score, pooled over pairs; mismatched runs are one-line errors."""

import importlib.util
from pathlib import Path

import pytest

from ldmkit.errors import UsageError
from ldmkit.evaluation.run import EvalSettings, evaluate

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread_module):
    root = tmp_path_factory.mktemp("gap")
    model, data = fx.tiny_model(root / "model", with_clip=True), fx.shapes_data(root / "shapes")
    out = {}
    for name, guidance in (("base", 1.0), ("other", 3.0), ("more", 3.0)):
        n = 6 if name == "more" else 5
        out[name] = evaluate(EvalSettings(model=model, data=data, out=root / name, n=n, steps=1, guidance=guidance,
                                          clip=model, n_boot=20))
    return root, out


def test_the_pooled_numbers_are_the_runs_own(runs, capsys):
    gap = fx.load_script("retrieval_gap")
    root, metrics = runs
    gap.main([root / "base", root / "other", root / "base", root / "other"], n_boot=50)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("10 prompts in 2 set(s)")
    for k, line in zip((1, 5), lines[1:]):
        own = [metrics[name]["conditions"][0]["metrics"][f"retrieval_top{k}"]["estimate"] for name in ("base", "other")]
        assert line.startswith(f"top-{k}: base {own[0]:.3f} [") and f"other {own[1]:.3f} [" in line
        assert f"other - base {own[1] - own[0]:+.3f} [" in line
    own = [metrics[name]["conditions"][0]["metrics"]["clip_score"]["estimate"] for name in ("base", "other")]
    assert lines[3].startswith(f"CLIP score: base {own[0]:.2f} [") and f"other {own[1]:.2f} [" in lines[3]
    assert own[0] != pytest.approx(own[1], abs=0.01) and f"other - base {own[1] - own[0]:+.2f} [" in lines[3]


def test_mismatched_runs_are_refused(runs):
    gap = fx.load_script("retrieval_gap")
    root, _ = runs
    with pytest.raises(UsageError, match="different prompts"):
        gap.main([root / "base", root / "more"])
    with pytest.raises(UsageError, match="--n-boot must be in 2..100000"):
        gap.main([root / "base", root / "other"], n_boot=10**9)
    with pytest.raises(UsageError, match="in pairs"):
        gap.main([root / "base"])
    with pytest.raises(UsageError, match="not an `ldmkit eval` run"):
        gap.main([root / "base", root])


def test_top1_by_a_label_column_adds_up_to_the_pooled_top1(runs, capsys):
    gap = fx.load_script("retrieval_gap")
    root, metrics = runs
    gap.main([root / "base", root / "other"], n_boot=50, by="shape")
    lines = capsys.readouterr().out.splitlines()
    header = lines.index("top-1 by shape (n; base, other, other - base; real images):")
    rows = [line.split() for line in lines[header + 1:]]
    assert sum(int(r[1]) for r in rows) == 5
    for k, name in ((2, "base"), (3, "other")):  # per-value top-1 weighted by n is the run's own top-1
        own = metrics[name]["conditions"][0]["metrics"]["retrieval_top1"]["estimate"]
        assert sum(int(r[1]) * float(r[k]) for r in rows) / 5 == pytest.approx(own, abs=1e-3)
    real = metrics["base"]["reference"]["real_images"]["retrieval_top1"]["estimate"]  # the eval's own ceiling
    assert all(r[-2] == "real" for r in rows)
    assert sum(int(r[1]) * float(r[-1]) for r in rows) / 5 == pytest.approx(real, abs=1e-3)
    with pytest.raises(UsageError, match="no label column 'emoji_group'"):
        gap.main([root / "base", root / "other"], by="emoji_group")
