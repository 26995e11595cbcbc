"""Free phrasings of avatars (issue 17): truthful words, disjoint pools, and the builder's `phrasings` option."""

import json
import random
from types import SimpleNamespace

import pytest

from ldmkit.data.builtin import avatar_phrasings as ph
from ldmkit.data.builtin.avatars import TEMPLATES, avatar_values, captions_for, random_attributes
from ldmkit.errors import UsageError

TABLES = {"top": (ph.HAIR_STYLE, ph.HAT), "hair_color": (ph.HAIR_COLOR,), "hat_color": (ph.CLOTH_COLOR,),
          "clothing": (ph.CLOTHES,), "clothing_color": (ph.CLOTH_COLOR,), "skin": (ph.SKIN,), "mouth": (ph.MOUTH,),
          "eyes": (ph.EYES,), "facial_hair": (ph.FACIAL_HAIR,), "accessory": (ph.ACCESSORY,),
          "background": (ph.BACKGROUND,)}


def _avatars(count: int, seed: int = 5) -> list[dict]:
    return [random_attributes(random.Random(f"avatars-{seed}-{i}")) for i in range(count)]


def test_every_word_means_real_label_values_and_every_value_has_words_in_both_pools():
    values = avatar_values()
    for column, tables in TABLES.items():
        covered = {"train": set(), "eval": set(), "new": set()}
        for table in tables:
            assert {"both", "train", "eval"} <= set(table) <= {"both", "train", "eval", "new"}
            for part, words in table.items():
                for text, meant in words.items():
                    meant = meant.split(", ")
                    assert set(meant) <= set(values[column]), (column, text, meant)  # no typos, no stray values
                    for pool in ("train", "eval") if part == "both" else (part,):
                        covered[pool] |= set(meant)
            assert not set(table["train"]) & set(table["eval"]), "a word is in both pools twice"
        needed = set(values[column]) - {"none", "default"} if column in ("accessory", "facial_hair", "eyes",
                                                                        "hat_color") else set(values[column])
        if column == "top":
            needed = set(values["top"])
        for pool in ("train", "eval"):
            assert needed <= covered[pool], (column, pool, needed - covered[pool])


def test_phrasings_ask_for_what_the_avatar_shows_and_name_one_to_four_attributes():
    sizes = set()
    for labels in _avatars(400):
        for pool in ph.POOLS:
            p = ph.free_phrasing(labels, random.Random(repr(labels) + pool), pool=pool)
            assert 1 <= len(p.asked) <= ph.MAX_ATTRIBUTES
            sizes.add(len(p.asked))
            for column, allowed in p.asked.items():
                assert labels[column] in allowed, (p.text, column)
            assert "eyebrows" not in p.asked
            if labels["accessory"] in ph.OPAQUE:
                assert "eyes" not in p.asked  # hidden behind sunglasses
            if labels["top"] == "no_hair" or labels["top"] in ph.HATS:
                assert "hair_color" not in p.asked  # nothing shows it
            assert "  " not in p.text and " a a" not in p.text and not any(f" a {v}" in p.text for v in "aeiou")
    assert sizes == {1, 2, 3, 4}


def test_pools_share_no_sentence_shape_and_never_repeat_a_template():
    assert not set(ph.FRAMES["train"]) & set(ph.FRAMES["eval"])
    assert not set(ph.SUBJECTS["train"]) & set(ph.SUBJECTS["eval"])
    rows = _avatars(200)
    train = {ph.free_phrasing(r, random.Random(i), pool="train").text for i, r in enumerate(rows)}
    evals = {ph.free_phrasing(r, random.Random(i), pool="eval").text for i, r in enumerate(rows)}
    assert not train & evals
    captions = {c for r in rows for c in captions_for(r)}
    assert not (train | evals) & captions
    assert len(evals) > 190  # varied, not a handful of fixed strings
    assert sum("ginger" in t for t in evals) > 0 and not any("ginger" in t for t in train)


def test_columns_limit_what_may_be_named_and_bad_pools_are_refused():
    for labels in _avatars(100):
        p = ph.free_phrasing(labels, random.Random(1), pool="eval", columns={"skin", "mouth"})
        assert set(p.asked) <= {"skin", "mouth"}
    with pytest.raises(UsageError, match="pool"):
        ph.free_phrasing(_avatars(1)[0], random.Random(0), pool="test")
    with pytest.raises(UsageError, match="nothing nameable"):
        ph.free_phrasing(_avatars(1)[0], random.Random(0), pool="eval", columns={"eyebrows"})


def _rows(root):
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def test_builder_phrasings_add_captions_only_when_asked(tmp_path):
    from ldmkit.data.builtin import build_dataset

    plain = build_dataset("avatars", tmp_path / "plain", n=5, seed=2, size=32)
    varied = build_dataset("avatars", tmp_path / "varied", n=5, seed=2, size=32, phrasings=2)
    assert "phrasings" not in plain and varied["phrasings"] == 2
    assert varied["captions"] == plain["captions"] + 2 * 5 == 5 * (len(TEMPLATES) + 2)
    for a, b in zip(_rows(tmp_path / "plain"), _rows(tmp_path / "varied")):
        labels = {k: v for k, v in a.items() if k not in ("file_name", "text")}
        assert a["text"] == list(captions_for(labels))  # the default build is unchanged
        assert b["text"][:3] == a["text"] and len(b["text"]) == 5 and b["file_name"] == a["file_name"]
        rng = random.Random(f"avatars-phrasings-2-{int(a['file_name'][-9:-4])}")
        assert b["text"][3:] == [ph.free_phrasing(labels, rng, pool="train").text for _ in range(2)]
    assert (tmp_path / "plain" / "images" / "00003.png").read_bytes() == \
        (tmp_path / "varied" / "images" / "00003.png").read_bytes()


def test_a_phrasing_that_repeats_a_caption_is_drawn_again(monkeypatch):
    """A 6,000-avatar build with 2 phrasings each had 5 `duplicate_line`s before repeats were redrawn."""
    from ldmkit.data.builtin.card import BuildResult, Record

    draws = iter(["a ginger guy", "a person with red hair", "a ginger guy", "ginger, beard", "never reached"])
    monkeypatch.setattr(ph, "free_phrasing", lambda labels, rng, pool, **_: SimpleNamespace(text=next(draws), asked={}))
    record = Record("images/00000.png", ("a person with red hair",), {"top": "shaggy"})
    result = BuildResult("avatars", (record,), {}, {}, ("{x}",))
    (out,) = ph.with_phrasings(result, seed=0, count=2).records
    assert out.captions == ("a person with red hair", "a ginger guy", "ginger, beard")


@pytest.mark.parametrize("bad", [-1, 17, True, "2", 1.0])
def test_builder_refuses_bad_phrasing_counts(tmp_path, bad):
    from ldmkit.data.builtin import build_dataset

    with pytest.raises(UsageError, match="phrasings"):
        build_dataset("avatars", tmp_path / "x", n=2, size=32, phrasings=bad)
    assert not (tmp_path / "x").exists()


def test_phrasings_without_avatars_is_an_error_and_a_mixture_passes_them_to_avatars(tmp_path):
    from ldmkit.data.builtin import build_dataset

    with pytest.raises(UsageError, match="avatars"):
        build_dataset("shapes", tmp_path / "s", n=2, size=32, phrasings=1)
    with pytest.raises(UsageError, match="avatars"):
        build_dataset("shapes+emoji", tmp_path / "m", n=2, size=32, phrasings=1)
    assert not (tmp_path / "s").exists() and not (tmp_path / "m").exists()
    card = build_dataset("shapes+avatars", tmp_path / "mix", n=3, size=32, phrasings=1)
    counts = {row["source"]: len(row["text"]) for row in _rows(tmp_path / "mix")}
    assert counts["avatars"] == len(TEMPLATES) + 1
    assert card["part_cards"]["avatars"]["phrasings"] == 1 and "phrasings" not in card["part_cards"]["shapes"]
    plain = build_dataset("shapes", tmp_path / "plain-shapes", n=3, size=32)
    assert [r["text"] for r in _rows(tmp_path / "mix") if r["source"] == "shapes"] == \
        [r["text"] for r in _rows(tmp_path / "plain-shapes")]
    assert plain["captions"] == card["part_cards"]["shapes"]["captions"]


def test_the_new_pool_names_every_hair_and_clothing_colour_in_words_no_other_pool_or_caption_has():
    from ldmkit.evaluation.phrasing_vocabulary import CAPTION_WORDS, normalise, trained_phrases

    values = avatar_values()
    for column, table in (("hair_color", ph.HAIR_COLOR), ("clothing_color", ph.CLOTH_COLOR)):
        meant = {v for values_ in table["new"].values() for v in values_.split(", ")}
        assert meant == set(values[column])
        others = {normalise(w) for part in ("both", "train", "eval") for w in table[part]}
        others |= {normalise(w) for w in CAPTION_WORDS[column].values() if w} | set(trained_phrases(column, "all"))
        assert not {normalise(w) for w in table["new"]} & others
    with_new = {id(t) for tables in TABLES.values() for t in tables if "new" in t}
    assert with_new == {id(ph.HAIR_COLOR), id(ph.CLOTH_COLOR)}
    rows = _avatars(300)
    for i, labels in enumerate(rows):
        p = ph.free_phrasing(labels, random.Random(i), pool="new")
        assert set(p.asked) <= ph.NEW_COLUMNS and all(labels[c] in v for c, v in p.asked.items())
        assert all(w in ph.HAIR_COLOR["new"] or w in ph.CLOTH_COLOR["new"] for w in p.words.values())
    train = [ph.free_phrasing(r, random.Random(i), pool="train", words="all").text for i, r in enumerate(rows)]
    assert not any(w in t for t in train for w in ("russet", "periwinkle", "salt-and-pepper", "cobalt"))
