"""Issue 17: `data.builtin_phrasings` and `data.builtin_emoji_aliases` reach the built captions, are recorded,
and an existing build made with other values is refused (never a silent mix), as for `builtin_n`."""

import json
import os
import random
from pathlib import Path

import pytest

from ldmkit.cli import main
from ldmkit.config import load_recipe
from ldmkit.data.builtin import build_dataset
from ldmkit.data.builtin.avatar_phrasings import colours_shown, free_phrasing, record_phrasings
from ldmkit.errors import DataError, UsageError
from ldmkit.training.data_provenance import data_provenance, summary_lines
from ldmkit.training.recipes import DataSection, UNetRecipe
from ldmkit.training.run_data import data_source_overrides, open_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _texts(root: Path) -> list[list[str]]:
    return [json.loads(line)["text"] for line in (root / "metadata.jsonl").read_text().splitlines() if line]


def test_recipe_keys_load_and_are_checked():
    recipe = load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["data.builtin=emoji+avatars", "data.builtin_phrasings=3",
                                                             "data.builtin_emoji_aliases=true"])
    assert (recipe.data.builtin_phrasings, recipe.data.builtin_emoji_aliases) == (3, True)
    assert (DataSection(builtin="shapes").builtin_phrasings, DataSection(builtin="shapes").builtin_emoji_aliases) \
        == (0, False)
    bad = [(dict(builtin="emoji", builtin_phrasings=2),
            "data.builtin_phrasings=2 has no effect.*'emoji' holds no avatars"),
           (dict(builtin="avatars+shapes", builtin_emoji_aliases=True),
            "data.builtin_emoji_aliases=True has no effect"),
           (dict(path="/x", builtin_phrasings=1), "no built-in dataset is built"),
           (dict(path="/x", builtin_emoji_aliases=True), "no built-in dataset is built"),
           (dict(builtin="avatars", builtin_phrasings=17), r"phrasings must be an integer in \[0, 16\]"),
           (dict(builtin="avatars", builtin_phrasings=True), "phrasings must be an integer"),
           (dict(builtin="emoji", builtin_emoji_aliases="yes"), "emoji_aliases must be true or false")]
    for kwargs, message in bad:
        with pytest.raises(UsageError, match=message):
            DataSection(**kwargs)


def test_a_data_path_override_drops_them_or_refuses_them():
    base = {"data": {"builtin": "emoji+avatars", "builtin_phrasings": 2, "builtin_emoji_aliases": True}, "train": {}}
    assert data_source_overrides(base, ["data.path=x"])["data"] == {}
    assert data_source_overrides(base, ["data.path=x", "data.builtin=avatars"]) is base
    for key in ("data.builtin_phrasings=1", "data.builtin_emoji_aliases=false"):
        with pytest.raises(UsageError, match=key.partition("=")[0] + " would have no effect"):
            data_source_overrides(base, ["data.path=x", key])


def test_phrasings_reach_the_captions_are_recorded_and_a_mismatch_is_refused(tmp_path, capsys):
    asked = DataSection(path=str(tmp_path / "built"), builtin="avatars", builtin_n=3, image_size=32,
                        builtin_phrasings=2)
    dataset = open_dataset(asked, tmp_path)
    reference = tmp_path / "reference"
    build_dataset("avatars", reference, n=3, seed=0, size=32, phrasings=2)
    assert _texts(tmp_path / "built") == _texts(reference)  # the recipe key is the builder's option
    plain = tmp_path / "plain"
    build_dataset("avatars", plain, n=3, seed=0, size=32)
    assert [len(t) for t in _texts(tmp_path / "built")] == [len(t) + 2 for t in _texts(plain)]
    assert [list(s.captions) for s in dataset.samples] == _texts(reference)

    built = data_provenance(dataset, asked)["builtin"]
    assert (built["phrasings"], built["emoji_aliases"]) == (2, False)
    assert "built-in avatars (seed 0, 32 px, free phrasings per avatar: 2)" in "\n".join(
        summary_lines(data_provenance(dataset, asked)))
    assert json.loads((tmp_path / "built" / "dataset_card.json").read_text())["phrasings"] == 2

    before = _texts(tmp_path / "built")
    for other in (0, 1):  # e.g. a run resumed with another value: refused, the folder left as it is
        changed = DataSection(**{**asked.__dict__, "builtin_phrasings": other})
        with pytest.raises(DataError, match=f"another build of avatars: phrasings 2 \\(recipe: {other}\\)"):
            open_dataset(changed, tmp_path)
    assert _texts(tmp_path / "built") == before
    with pytest.raises(DataError, match=r"phrasings 0 \(recipe: 2\)"):  # a plain build asked for with phrasings
        open_dataset(DataSection(**{**asked.__dict__, "path": str(plain)}), tmp_path)
    assert data_provenance(open_dataset(DataSection(**{**asked.__dict__, "path": str(plain), "builtin_phrasings": 0}),
                                        tmp_path), asked)["builtin"]["phrasings"] == 0


@pytest.fixture
def emoji_sources():
    """Skip without the emoji font or unicode-cldr-core, except in CI (CI=true), where both are installed."""
    from ldmkit.data.builtin.emoji import check_sources
    from ldmkit.data.builtin.emoji_aliases import check_cldr

    try:
        check_sources()
        check_cldr()
    except (UsageError, DataError) as err:
        if os.environ.get("CI") == "true":
            pytest.fail(str(err))
        pytest.skip(str(err))


def test_a_mixture_records_and_checks_each_option(tmp_path, emoji_sources):
    asked = DataSection(path=str(tmp_path / "mix"), builtin="emoji+avatars", builtin_n={"emoji": 3, "avatars": 2},
                        image_size=32, builtin_phrasings=1, builtin_emoji_aliases=True)
    dataset = open_dataset(asked, tmp_path)
    build_dataset("emoji+avatars", tmp_path / "plain", n={"emoji": 3, "avatars": 2}, seed=0, size=32)
    plain = _texts(tmp_path / "plain")
    assert sum(map(len, _texts(tmp_path / "mix"))) > sum(map(len, plain)) + 2  # 1 phrasing per avatar + aliases
    built = data_provenance(dataset, asked)["builtin"]
    assert (built["name"], built["phrasings"], built["emoji_aliases"]) == ("emoji+avatars", 1, True)
    line = summary_lines(data_provenance(dataset, asked))[1]
    assert line.endswith("free phrasings per avatar: 1, CLDR emoji aliases)")
    for other, diff in ((dict(builtin_emoji_aliases=False), r"emoji_aliases True \(recipe: False\)"),
                        (dict(builtin_phrasings=3), r"phrasings 1 \(recipe: 3\)")):
        with pytest.raises(DataError, match="another build of emoji\\+avatars: " + diff):
            open_dataset(DataSection(**{**asked.__dict__, **other}), tmp_path)
    with pytest.raises(DataError, match=r"phrasings 0 \(recipe: 1\), emoji_aliases False \(recipe: True\)"):
        open_dataset(DataSection(**{**asked.__dict__, "path": str(tmp_path / "plain")}), tmp_path)


def test_phrasing_colours_name_every_colour_shown_are_recorded_and_checked(tmp_path, capsys):
    asked = DataSection(path=str(tmp_path / "built"), builtin="avatars", builtin_n=6, image_size=32,
                        builtin_phrasings=2, builtin_phrasing_colours=True)
    dataset = open_dataset(asked, tmp_path)
    plain = tmp_path / "plain"
    build_dataset("avatars", plain, n=6, seed=0, size=32, phrasings=2)
    coloured, loose = _texts(tmp_path / "built"), _texts(plain)
    assert [len(t) for t in coloured] == [len(t) for t in loose] and coloured != loose
    assert [t[:3] for t in coloured] == [t[:3] for t in loose]  # the template captions are untouched
    for sample in dataset.samples:  # each added phrasing is a train-pool draw that names the shown colours
        index = int(Path(sample.path).stem)
        again = record_phrasings(sample.labels, sample.captions[:3], random.Random(f"avatars-phrasings-0-{index}"), 2,
                                 colours=True)
        assert list(sample.captions[3:]) == again
    rng = random.Random(0)
    for sample in dataset.samples:
        need = colours_shown(sample.labels)
        assert need and {"clothing_color"} <= need
        draws = [free_phrasing(sample.labels, rng, pool="train") for _ in range(50)]
        assert any(not need <= d.asked.keys() for d in draws)  # without the option most draws omit a colour
    card = json.loads((tmp_path / "built" / "dataset_card.json").read_text())
    assert card["phrasing_colours"] is True and "each names every colour" in card["notes"][-1]
    assert "free phrasings per avatar: 2 (each naming its colours)" in "\n".join(
        summary_lines(data_provenance(dataset, asked)))
    with pytest.raises(DataError, match=r"phrasing_colours True \(recipe: False\)"):
        open_dataset(DataSection(**{**asked.__dict__, "builtin_phrasing_colours": False}), tmp_path)
    with pytest.raises(UsageError, match="phrasing_colours=True has no effect without data.builtin_phrasings"):
        DataSection(builtin="avatars", builtin_phrasing_colours=True)
    for name in ("avatars", "emoji+avatars"):  # the command line: one line, before any folder is made
        out = tmp_path / f"refused-{name}"
        assert main(["data", "build", name, str(out), "--phrasing-colours"]) == 2
        err = capsys.readouterr().err
        assert "phrasing_colours=True has no effect without phrasings" in err and "Traceback" not in err
        assert not out.exists()
    with pytest.raises(UsageError, match="phrasing_colours must be true or false"):
        DataSection(builtin="avatars", builtin_phrasings=1, builtin_phrasing_colours="yes")


def test_phrasing_words_all_teaches_the_eval_words_in_train_sentences_recorded_and_checked(tmp_path, capsys):
    from ldmkit.data.builtin import avatar_phrasings as ph

    rows = [sample.labels for sample in open_dataset(DataSection(path=str(tmp_path / "base"), builtin="avatars",
                                                                 builtin_n=40, image_size=32), tmp_path).samples]
    draws = [ph.free_phrasing(labels, random.Random(i), pool="train", words="all") for i, labels in enumerate(rows * 5)]
    eval_words = {w for table in (ph.HAIR_COLOR, ph.CLOTH_COLOR, ph.SKIN, ph.MOUTH) for w in table["eval"]}
    used = {w for d in draws for w in d.words.values()}
    assert used & eval_words and used - eval_words  # both pools' words ...
    for d, labels in zip(draws, rows * 5):  # ... in train sentences, each still true of its avatar
        assert not any(d.text.startswith(s) for s in ph.SUBJECTS["eval"])
        assert all(labels[column] in allowed for column, allowed in d.asked.items())
    with pytest.raises(UsageError, match="applies to train-pool phrasings"):
        ph.free_phrasing(rows[0], random.Random(0), pool="eval", words="all")

    asked = DataSection(path=str(tmp_path / "all"), builtin="avatars", builtin_n=6, image_size=32,
                        builtin_phrasings=2, builtin_phrasing_words="all")
    dataset = open_dataset(asked, tmp_path)
    card = json.loads((tmp_path / "all" / "dataset_card.json").read_text())
    assert card["phrasing_words"] == "all" and "eval pool's synonyms too" in card["notes"][-1]
    assert "free phrasings per avatar: 2 (words: all)" in "\n".join(summary_lines(data_provenance(dataset, asked)))
    for sample in dataset.samples:
        index = int(Path(sample.path).stem)
        again = record_phrasings(sample.labels, sample.captions[:3], random.Random(f"avatars-phrasings-0-{index}"), 2,
                                 words="all")
        assert list(sample.captions[3:]) == again
    with pytest.raises(DataError, match=r"phrasing_words all \(recipe: train\)"):
        open_dataset(DataSection(**{**asked.__dict__, "builtin_phrasing_words": "train"}), tmp_path)
    with pytest.raises(UsageError, match="phrasing_words='all' has no effect without data.builtin_phrasings"):
        DataSection(builtin="avatars", builtin_phrasing_words="all")
    with pytest.raises(UsageError, match="phrasing_words must be one of train, all"):
        DataSection(builtin="avatars", builtin_phrasings=1, builtin_phrasing_words="eval")
    out = tmp_path / "refused"
    assert main(["data", "build", "emoji+avatars", str(out), "--phrasing-words", "every"]) == 2
    err = capsys.readouterr().err
    assert "phrasing_words must be one of train, all" in err and "Traceback" not in err and not out.exists()
