"""The real references of `ldmkit eval` are framed as the model was trained (ldmkit.evaluation.framing)."""

import json

import numpy as np
import pytest
from PIL import Image

from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.evaluation.framing import reference_framing
from ldmkit.config.training import TrimSection
from ldmkit.training.recipes import DataSection


def record(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ldmkit.json").write_text(json.dumps({"training": {"data": data}}))
    return folder


def wide_bar():
    """A black 80 x 40 bar in the middle of a white 200 x 120 canvas."""
    img = Image.new("RGB", (200, 120), "white")
    img.paste((0, 0, 0), (60, 40, 140, 80))
    return img


def test_the_framing_comes_from_the_models_record(tmp_path):
    fill = reference_framing(record(tmp_path / "a", {"trim": {"fit": "fill", "focus": "auto", "trim": True}}))
    assert (fill.fit, fill.trim) == ("fill", True) and "training.data.trim" in fill.source
    # a record from before data.trim was recorded: trim version 1, whose crop is today's fill
    old = reference_framing(record(tmp_path / "b", {"val_fraction": 0.1}))
    assert old.fit == "fill" and "trim version 1" in old.source
    # no record at all (a downloaded model): a centre crop, no border trim
    foreign = reference_framing(tmp_path / "c")
    assert (foreign.fit, foreign.focus, foreign.trim) == ("crop", "centre", False)
    assert reference_framing(tmp_path / "a", fit="stretch").describe() == {
        "fit": "stretch", "focus": "auto", "trim": True, "source": "--fit"}


def test_each_fit_frames_a_wide_subject_differently():
    img, size = wide_bar(), 32
    pixels = {fit: np.asarray(reference_framing("unused", fit=fit)(img, size), dtype=float).mean(axis=2)
              for fit in ("fill", "crop", "stretch")}
    assert all(p.shape == (size, size) for p in pixels.values())
    assert pixels["fill"].max() < 40  # the bar fills the frame: black everywhere
    crop = pixels["crop"]  # the whole bar with a thin margin: white around it, black across the middle
    assert crop[0].min() > 215 and crop[-1].min() > 215 and crop[size // 2, 0] > 215
    assert crop[size // 2, 4:-4].max() < 40
    stretch = pixels["stretch"]  # the whole canvas squashed: white corners, white left and right of the bar
    assert stretch[size // 2, 0] > 215 and stretch[size // 2, size // 2] < 40 and stretch[size // 2, size - 1] > 215


def test_bad_fits_and_records_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="--fit must be one of"):
        reference_framing(tmp_path, fit="squash")
    with pytest.raises(ModelFolderError, match="not a framing ldmkit knows"):
        reference_framing(record(tmp_path / "bad", {"trim": {"fit": "zoom"}}))


def test_built_in_shapes_are_not_border_trimmed():
    # shapes captions name sizes and positions; trimming the backdrop would zoom in on the shape
    assert DataSection(builtin="shapes").trim.trim is False
    assert DataSection(builtin="shapes+emoji", builtin_n=None).trim.trim is False
    assert DataSection(builtin="emoji").trim.trim is True
    assert DataSection(builtin="shapes", trim=TrimSection(trim=True)).trim.trim is True


def test_a_folder_built_from_shapes_keeps_its_borders_too(tmp_path):
    # the builder module declares the default (BORDER_TRIM); a path with a shapes card gets it like `builtin`
    from ldmkit.data.builtin.card import CARD_NAME
    from ldmkit.data.builtin.single import border_trim, card_border_trim

    assert (border_trim("shapes"), border_trim("emoji+shapes"), border_trim("emoji+avatars")) == (False, False, True)
    with pytest.raises(UsageError, match="unknown built-in dataset 'faces'"):
        border_trim("emoji+faces")
    for name, card in (("shapes", {"name": "shapes"}), ("emoji", {"name": "emoji"}), ("broken", "{not json"),
                       ("odd", {"name": "clouds"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / CARD_NAME).write_text(card if isinstance(card, str) else json.dumps(card))
    assert card_border_trim(tmp_path / "shapes") is False
    assert card_border_trim(tmp_path / "emoji") is True
    assert card_border_trim(tmp_path / "broken") is None and card_border_trim(tmp_path / "odd") is None
    assert card_border_trim(tmp_path / "missing") is None
    assert DataSection(path=str(tmp_path / "shapes")).trim.trim is False
    assert DataSection(path=str(tmp_path / "emoji")).trim.trim is True
    assert DataSection(path=str(tmp_path / "missing")).trim.trim is True
    assert DataSection(path=str(tmp_path / "shapes"), trim=TrimSection(trim=True)).trim.trim is True
