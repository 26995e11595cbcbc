"""Emoji captions from the CLDR English annotations (issue 17): the forms added, what is left out, and no
silent fallback when Debian's unicode-cldr-core is missing (skipped without it, except in CI)."""

import json
import os
import re

import pytest

from ldmkit.data.builtin import build_dataset
from ldmkit.data.builtin import emoji as emoji_builder
from ldmkit.data.builtin import emoji_aliases as ea
from ldmkit.errors import DataError, UsageError


def _or_skip(check):
    try:
        return check()
    except (UsageError, DataError) as err:
        if os.environ.get("CI") == "true":
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def notes():
    pytest.importorskip("emoji")
    return _or_skip(ea.load_annotations)


@pytest.fixture(scope="module")
def taken(notes):
    return ea.package_names()


def _plain(text: str) -> tuple[str, ...]:
    """The builder's own captions of the emoji `text` (as emoji.build writes them)."""
    import emoji

    data = emoji.EMOJI_DATA[text]
    return emoji_builder.captions_for(emoji_builder.clean_name(data["en"]),
                                      [emoji_builder.clean_name(a) for a in data.get("alias", [])])


def _all_emoji() -> list[str]:
    return [text for text, _ in emoji_builder.candidates()]


def test_known_emoji_get_their_specific_keywords(notes, taken):
    # CLDR: fire "fire | flame | tool" (tool: generic), pizza "cheese | pizza | slice" (cheese: 🧀),
    # 🇩🇪 "flag: Germany" (the emoji package says "Germany"), red heart "heart | red heart" (heart: generic; red heart: its name)
    assert ea.alias_captions("\U0001F525", _plain("\U0001F525"), notes, taken) == ("a flame emoji", "flame")
    assert ea.alias_captions("\U0001F355", _plain("\U0001F355"), notes, taken) == ("a slice emoji",)
    assert ea.alias_captions("\U0001F1E9\U0001F1EA", _plain("\U0001F1E9\U0001F1EA"), notes, taken) == ("flag: Germany",)
    assert ea.alias_captions("\u2764\ufe0f", _plain("\u2764\ufe0f"), notes, taken) == ()
    assert notes.shared["heart"] > ea.MAX_SHARED and "cheese" in taken  # the emoji package: ":cheese:" is 🧀


def test_tone_variants_use_the_base_keywords_and_keep_the_tone_in_the_name_only(notes, taken):
    base = ea.alias_captions("\U0001F44D", _plain("\U0001F44D"), notes, taken)
    toned = ea.alias_captions("\U0001F44D\U0001F3FD", _plain("\U0001F44D\U0001F3FD"), notes, taken)
    assert toned == base == ("a thumb emoji",)  # not "thumbs up" (the base emoji's name), "+1", "up" or the tone


def test_no_caption_is_generic_or_names_another_emoji(notes, taken):
    count = 0
    for text in _all_emoji():
        plain = _plain(text)
        extra = ea.alias_captions(text, plain, notes, taken)
        lower = {c.lower() for c in extra}
        assert len(extra) == len(lower) and not lower & {p.lower() for p in plain}
        cldr_name = notes.names.get(text.replace("\ufe0f", ""), "").lower()
        for caption in extra:
            if caption.lower() == cldr_name:
                continue  # the emoji's own CLDR name
            word = re.fullmatch(r"an? (.+) emoji", caption).group(1) if caption.endswith(" emoji") else caption
            assert notes.shared.get(word.lower(), 0) <= ea.MAX_SHARED, (text, caption)
            assert len(word) >= ea.MIN_LETTERS and "skin tone" not in word, (text, caption)
            assert word.lower() not in taken and word.lower() not in notes.all_names, (text, caption)
            if not caption.endswith(" emoji"):
                assert notes.shared.get(word.lower(), 0) == 1, (text, caption)  # bare only when specific
        assert len([c for c in extra if c.endswith(" emoji")]) <= ea.MAX_KEYWORDS
        count += bool(extra)
    assert count > len(_all_emoji()) // 2  # most emoji gain a caption


def test_missing_cldr_is_a_usage_error_naming_the_package(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="sudo apt-get install unicode-cldr-core"):
        ea.load_annotations(tmp_path / "nothing")
    monkeypatch.setattr(ea, "CLDR_DIR", tmp_path / "nothing")
    with pytest.raises(UsageError, match="unicode-cldr-core"):
        ea.check_cldr()
    if emoji_builder.FONT_PATH.is_file():  # the builder checks before touching the output folder
        with pytest.raises(UsageError, match="unicode-cldr-core"):
            build_dataset("emoji", tmp_path / "e", n=2, size=32, emoji_aliases=True)
        assert not (tmp_path / "e").exists()


def _fake_cldr(root, text):
    for rel in ea.CLDR_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_oversized_or_broken_files_are_refused(tmp_path, monkeypatch):
    small = '<ldml><annotations><annotation cp="x">a | b</annotation></annotations></ldml>'
    assert ea.load_annotations(_fake_cldr(tmp_path / "ok", small)).keywords == {"x": ("a", "b")}
    monkeypatch.setattr(ea, "MAX_FILE_BYTES", 20)
    with pytest.raises(DataError, match="larger than"):  # checked before parsing
        ea.load_annotations(_fake_cldr(tmp_path / "big", small))
    monkeypatch.undo()
    with pytest.raises(DataError, match="not readable XML"):
        ea.load_annotations(_fake_cldr(tmp_path / "broken", "<ldml><annotations>"))


def test_aliases_need_emoji_and_a_boolean(tmp_path):
    with pytest.raises(UsageError, match="emoji_aliases applies to the emoji dataset"):
        build_dataset("shapes", tmp_path / "s", n=2, size=32, emoji_aliases=True)
    with pytest.raises(UsageError, match="emoji_aliases applies to the emoji dataset"):
        build_dataset("shapes+avatars", tmp_path / "m", n=2, size=32, emoji_aliases=True)
    with pytest.raises(UsageError, match="true or false"):
        build_dataset("emoji", tmp_path / "e", n=2, size=32, emoji_aliases="yes")
    assert not any(tmp_path.iterdir())


def test_build_adds_alias_captions_after_the_plain_ones(tmp_path, notes, taken):
    _or_skip(emoji_builder.check_sources)
    plain = build_dataset("emoji", tmp_path / "plain", n=12, seed=3, size=32)
    card = build_dataset("emoji", tmp_path / "aliases", n=12, seed=3, size=32, emoji_aliases=True)
    assert "emoji_aliases" not in plain and card["emoji_aliases"] is True
    assert card["sources"][ea.CLDR_PACKAGE] != "not installed" and any("CLDR" in n for n in card["notes"])
    rows = [[json.loads(line) for line in (tmp_path / d / "metadata.jsonl").read_text().splitlines()]
            for d in ("plain", "aliases")]
    for a, b in zip(*rows):
        assert a["file_name"] == b["file_name"] and a["emoji"] == b["emoji"]
        assert b["text"] == a["text"] + list(ea.alias_captions(a["emoji"], tuple(a["text"]), notes, taken))
        image = a["file_name"]
        assert (tmp_path / "plain" / image).read_bytes() == (tmp_path / "aliases" / image).read_bytes()
    assert card["captions"] > plain["captions"]


def test_cli_data_build_passes_both_options(tmp_path, capsys):
    from ldmkit.cli import main

    _or_skip(emoji_builder.check_sources)
    _or_skip(ea.check_cldr)
    assert main(["data", "build", "emoji+avatars", str(tmp_path / "m"), "--n", "emoji=3", "--n", "avatars=2",
                 "--size", "32", "--phrasings", "2", "--emoji-aliases"]) == 0
    card = json.loads((tmp_path / "m" / "dataset_card.json").read_text())
    assert (card["phrasings"], card["emoji_aliases"]) == (2, True)
    assert card["part_cards"]["avatars"]["phrasings"] == 2 and card["part_cards"]["emoji"]["emoji_aliases"] is True
    assert main(["data", "build", "shapes", str(tmp_path / "s"), "--n", "2", "--phrasings", "1"]) == 2
    assert "applies to the avatars dataset only" in capsys.readouterr().err and not (tmp_path / "s").exists()
