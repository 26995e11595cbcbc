"""scripts/fd_floor.py (issue 17's target 3): the eval's own FD, beside a real-vs-real floor at the same sizes."""

import importlib.util
from pathlib import Path

import pytest

from ldmkit.data.builtin import build_dataset
from ldmkit.errors import UsageError
from ldmkit.evaluation.run import EvalSettings, evaluate

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def test_the_floors_are_taken_at_the_evals_sizes_and_through_the_vae(tmp_path, capsys, one_thread):
    model, data = fx.tiny_model(tmp_path / "model", with_clip=True), fx.shapes_data(tmp_path / "shapes")
    metrics = evaluate(EvalSettings(model=model, data=data, out=tmp_path / "eval", n=6, steps=1, clip=model,
                                    n_boot=20))
    build_dataset("shapes", tmp_path / "more", n=400, seed=1, size=32)
    script = fx.load_script("fd_floor")
    script.main(tmp_path / "eval", tmp_path / "more")
    lines = capsys.readouterr().out.splitlines()
    script.main(tmp_path / "eval", None)              # no other images: the floors use halves of the references
    halves = capsys.readouterr().out.splitlines()
    sizes = metrics["conditions"][0]["metrics"]["sizes"]
    fd = metrics["conditions"][0]["metrics"]["fd"]["estimate"]
    assert lines[0].startswith(f"{'generated vs real':<36} {sizes[0]} vs {sizes[1]}  FD {fd:.5g} [")
    assert lines[1].startswith(f"{'other real vs real (floor)':<36} {sizes[0]} vs {sizes[1]}  FD ")
    assert lines[2].startswith(f"{'other real through the VAE vs real':<36} {sizes[0]} vs {sizes[1]}  FD ")
    floor, vae_floor = (float(line.split("FD ")[1].split()[0]) for line in lines[1:3])
    assert floor != vae_floor                          # the tiny VAE changes the images
    assert lines[3] == f"FD ratio to the floor: {fd / floor:.2f}"
    assert lines[4] == f"FD ratio to the VAE's floor: {fd / vae_floor:.2f}"
    assert lines[5].startswith("FD extrapolated to infinitely many samples")
    assert lines[6].startswith(f"{'generated vs real':<36} skipped: FD extrapolation needs at least")  # 6 images
    half, rest = sizes[1] - sizes[1] // 2, sizes[1] // 2
    assert halves[1].startswith(f"{'real half vs half (floor)':<36} {half} vs {rest}  FD ")
    assert halves[2].startswith(f"{'half through the VAE vs half':<36} {half} vs {rest}  FD ")
    assert halves[3].startswith("FD ratio to the floor: not comparable")
    assert halves[5].startswith("FD extrapolated to infinitely many samples (FD-infinity; subsets of 60%-100%")
    assert all(" skipped: FD extrapolation needs at least" in line for line in halves[6:9])
    build_dataset("shapes", tmp_path / "few", n=60, seed=2, size=32)  # 2-5 test images: fewer than the eval's 6
    with pytest.raises(UsageError, match="are needed"):
        script.main(tmp_path / "eval", tmp_path / "few")
    with pytest.raises(UsageError, match="not an `ldmkit eval` run"):
        script.main(tmp_path, tmp_path / "more")


def test_extrapolated_fds_and_their_ratio_only_when_the_floor_is_fitted_and_above_zero(capsys):
    import numpy as np

    from ldmkit.evaluation.frechet import frechet_distance_extrapolated

    rng = np.random.default_rng(0)
    real, other = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    generated = 0.3 + rng.standard_normal((400, 8))
    script = fx.load_script("fd_floor")
    script.print_extrapolated({"generated vs real": (generated, real), "other real vs real (floor)": (other, real),
                               "too few": (other[:40], real[:40])})
    lines = capsys.readouterr().out.splitlines()
    fit = frechet_distance_extrapolated(generated, real)
    assert lines[1] == (f"{'generated vs real':<36} FD_inf {fit.estimate:.5g} [{fit.low:.4g}, {fit.high:.4g}]  "
                        f"bias slope {fit.slope:.4g}")
    assert lines[2].startswith(f"{'other real vs real (floor)':<36} FD_inf ")
    assert lines[3].startswith(f"{'too few':<36} skipped: FD extrapolation needs at least 16 samples")
    assert lines[4].startswith("FD_inf ratio to other real vs real (floor): undefined (its interval reaches 0")
    assert len(lines) == 5                                   # no ratio to the floor that was skipped
    script.print_extrapolated({"a": (generated + 0.3, real), "b": (generated, real)})
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith("FD_inf ratio to b: ") and float(lines[3].split(": ")[1]) > 2
