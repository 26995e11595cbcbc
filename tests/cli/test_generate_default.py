"""`ldmkit generate PROMPT` without --model: the package's default_model/, or a clear error (never random weights)."""

from pathlib import Path

import pytest
from PIL import Image

import ldmkit.cli.generate as generate_cli
from ldmkit.cli import main


@pytest.fixture(scope="module")
def shipped_tiny(tmp_path_factory):
    """A tiny model shipped (fp16) into a temporary stand-in for the package's default_model/."""
    from ldmkit.models import build_components, save_components
    from ldmkit.models.shipping import ShipSpec, ship_model

    root = tmp_path_factory.mktemp("default")
    save_components(build_components("tiny", seed=4), root / "source")
    ship_model(ShipSpec(source=root / "source", out=root / "default_model", sampling={"steps": 2}))
    return root / "default_model"


def test_without_model_uses_the_default_model(shipped_tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate_cli, "default_model_dir", lambda: shipped_tiny)
    assert main(["generate", "a dot", "-o", str(tmp_path), "--quiet", "--threads", "1"]) == 0
    (png,) = tmp_path.glob("*.png")
    assert Image.open(png).size == (32, 32)
    assert "Steps: 2" in Image.open(png).text["parameters"]  # the shipped model's own default


def test_without_model_and_without_default_the_error_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate_cli, "default_model_dir", lambda: tmp_path / "default_model")
    assert main(["generate", "a dot", "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no default model is installed" in err and "--model DIR" in err and "ldmkit model ship" in err
    assert not (tmp_path / "out").exists()


def test_threads_must_be_positive(shipped_tiny, tmp_path, capsys):
    assert main(["generate", "x", "--model", str(shipped_tiny), "--threads", "0", "-o", str(tmp_path / "o")]) == 2
    assert "--threads must be in 1..256" in capsys.readouterr().err


def test_default_model_dir_is_inside_the_package():
    import ldmkit

    assert generate_cli.default_model_dir().parent.resolve() == Path(ldmkit.__file__).parent.resolve()


def test_a_second_trajectory_never_replaces_the_first(shipped_tiny, tmp_path):
    args = ["generate", "a dot", "--model", str(shipped_tiny), "--trajectory", "-o", str(tmp_path), "--quiet"]
    assert main(args) == 0
    first = (tmp_path / "a-dot-0-trajectory.png").read_bytes()
    assert main([*args, "--steps", "1"]) == 0
    assert (tmp_path / "a-dot-0-trajectory.png").read_bytes() == first
    assert (tmp_path / "a-dot-0-1-trajectory.png").is_file() and (tmp_path / "a-dot-0-1-trajectory.gif").is_file()
