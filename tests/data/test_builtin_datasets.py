"""Building the built-in datasets: files, card, captions vs labels, determinism, refusals."""

import hashlib
import json
from pathlib import Path

import pytest

from ldmkit.data.builtin import build_dataset
from ldmkit.data.builtin import emoji as emoji_builder
from ldmkit.errors import DataError, UsageError


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_layout(root: Path, card: dict, n: int, size: int) -> list[dict]:
    from PIL import Image

    rows = _rows(root)
    assert len(rows) == card["images"] == n
    assert json.loads((root / "dataset_card.json").read_text()) == card
    assert card["captions"] == sum(len(r["text"]) for r in rows)
    assert (root / "README.md").read_text().startswith(f"# {card['name']}")
    for template in card["caption_templates"]:
        assert template in (root / "README.md").read_text()
    for row in rows:
        with Image.open(root / row["file_name"]) as img:
            assert img.size == (size, size) and img.mode == "RGB"
        assert row["text"] and all(isinstance(t, str) and t.strip() for t in row["text"])
        labels = {k: v for k, v in row.items() if k not in ("file_name", "text")}
        assert sorted(labels) == card["label_columns"] and all(isinstance(v, str) for v in labels.values())
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(Path(r["file_name"]).name for r in rows)
    return rows


def test_shapes_build_card_and_captions_match_labels(tmp_path):
    from ldmkit.data.builtin.shapes import captions_for

    card = build_dataset("shapes", tmp_path / "s", n=40, seed=3, size=32)
    rows = _check_layout(tmp_path / "s", card, 40, 32)
    assert card["seed"] == 3 and card["sources"]["Pillow"]
    for row in rows:
        labels = {k: v for k, v in row.items() if k not in ("file_name", "text")}
        assert tuple(row["text"]) == captions_for(labels)
        first = row["text"][0]
        for key in ("shape", "color", "size"):
            assert labels[key] in first
        if labels["count"] == "2":
            assert labels["shape2"] in first and labels["color2"] in first
            assert ("above" in first) == (labels["relation"] == "above")


def test_shapes_images_read_back_as_their_labels(tmp_path):
    from PIL import Image

    from ldmkit.data.builtin.shapes_reader import read_shapes

    build_dataset("shapes", tmp_path / "s", n=60, size=64)
    for row in _rows(tmp_path / "s"):
        labels = {k: v for k, v in row.items() if k not in ("file_name", "text")}
        with Image.open(tmp_path / "s" / row["file_name"]) as img:
            assert read_shapes(img)["labels"] == labels


@pytest.mark.parametrize("name,n", [("shapes", 12), ("avatars", 6)])
def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, name, n):
    build_dataset(name, tmp_path / "a", n=n, seed=1, size=32)
    build_dataset(name, tmp_path / "b", n=n, seed=1, size=32)
    build_dataset(name, tmp_path / "c", n=n, seed=2, size=32)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_rebuild_replaces_an_earlier_build_but_refuses_other_folders(tmp_path):
    out = tmp_path / "s"
    build_dataset("shapes", out, n=10, size=32)
    build_dataset("shapes", out, n=4, size=32)  # an earlier build of the same dataset: replaced
    assert len(list((out / "images").iterdir())) == 4 == len(_rows(out))
    with pytest.raises(UsageError, match="build of 'shapes'"):
        build_dataset("avatars", out, n=2, size=32)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        build_dataset("shapes", out, n=4, size=32)
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "user"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UsageError, match="not empty"):
        build_dataset("shapes", other, n=2)
    assert (other / "photo.jpg").read_bytes() == b"x"


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown built-in dataset"):
        build_dataset("mnist", tmp_path / "x")
    with pytest.raises(UsageError, match="n must be"):
        build_dataset("shapes", tmp_path / "x", n=0)
    with pytest.raises(UsageError, match="size"):
        build_dataset("shapes", tmp_path / "x", size=4)
    assert not (tmp_path / "x").exists()


def test_avatars_captions_describe_the_labels(tmp_path):
    from ldmkit.data.builtin.avatars import CLOTHES, CLOTHING_COLORS, HAIR, HAIR_COLORS, HATS, MOUTHS

    card = build_dataset("avatars", tmp_path / "a", n=16, seed=0, size=48)
    rows = _check_layout(tmp_path / "a", card, 16, 48)
    assert "python_avatars" in card["sources"] and "resvg_py" in card["sources"]
    for row in rows:
        assert len(row["text"]) >= 2
        first, second = row["text"][0], row["text"][1]
        if row["top"] in HAIR:
            assert HAIR[row["top"]].format(c=HAIR_COLORS[row["hair_color"]]) in first
        else:
            assert HATS[row["top"]].format(c=CLOTHING_COLORS[row["hat_color"]]) in first
        assert first.endswith(MOUTHS[row["mouth"]])
        assert CLOTHES[row["clothing"]].format(c=CLOTHING_COLORS[row["clothing_color"]]) in second
        assert f"on a {row['background']} background" in second


def test_avatar_background_colour_is_the_labelled_one(tmp_path):
    from PIL import Image

    from ldmkit.data.builtin.avatars import BACKGROUNDS

    build_dataset("avatars", tmp_path / "a", n=4, size=64)
    for row in _rows(tmp_path / "a"):
        with Image.open(tmp_path / "a" / row["file_name"]) as img:
            corner = img.getpixel((1, 1))
        expected = tuple(int(BACKGROUNDS[row["background"]][i:i + 2], 16) for i in (1, 3, 5))
        assert max(abs(a - b) for a, b in zip(corner, expected)) <= 2


needs_font = pytest.mark.skipif(not emoji_builder.FONT_PATH.is_file(),
                                reason=f"Noto Color Emoji font missing: apt-get install {emoji_builder.FONT_PACKAGE}")


@needs_font
def test_emoji_build_names_and_labels(tmp_path):
    import emoji

    card = build_dataset("emoji", tmp_path / "e", n=30, seed=0, size=32)
    rows = _check_layout(tmp_path / "e", card, card["images"], 32)
    assert card["images"] >= 25  # a few of a random sample may be unrenderable sequences
    assert card["sources"]["emoji"] == emoji.__version__
    assert any("GUESSED" in note for note in card["notes"])
    for row in rows:
        name = emoji_builder.clean_name(emoji.EMOJI_DATA[row["emoji"]]["en"])
        assert row["text"][0] == name and row["text"][1] == f"an emoji of {name}"
        assert row["codepoints"] == " ".join(f"U+{ord(c):04X}" for c in row["emoji"])


@needs_font
def test_emoji_images_are_glyphs_on_white(tmp_path):
    import numpy as np
    from PIL import Image

    build_dataset("emoji", tmp_path / "e", n=5, size=64)
    for row in _rows(tmp_path / "e"):
        pixels = np.asarray(Image.open(tmp_path / "e" / row["file_name"]))
        assert (pixels[0] >= 250).all() and (pixels[:, 0] >= 250).all()  # white margin
        assert (pixels < 200).any()  # and a glyph


def test_emoji_names_follow_cldr_style():
    assert emoji_builder.clean_name(":woman_pilot_light_skin_tone:") == "woman pilot: light skin tone"
    assert emoji_builder.clean_name(":smiling_face_with_sunglasses:") == "smiling face with sunglasses"
    assert (emoji_builder.clean_name(":handshake_medium-light_skin_tone_light_skin_tone:")
            == "handshake: medium-light skin tone, light skin tone")


def test_missing_font_is_a_clear_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji_builder, "FONT_PATH", tmp_path / "absent.ttf")
    with pytest.raises(DataError, match="fonts-noto-color-emoji"):
        build_dataset("emoji", tmp_path / "e", n=2)
    assert not (tmp_path / "e").exists()
