"""ldmkit.evaluation.phrasing_vocabulary (issue 17): which eval phrases a model was trained on, and where its text
encoder puts the new ones."""

import numpy as np
import pytest

from ldmkit.data.builtin import avatar_phrasings as words
from ldmkit.errors import UsageError
from ldmkit.evaluation.phrasing_vocabulary import (GROUPS, WORD_TABLES, eval_values, normalise, trained_phrases,
                                                   word_statuses)


def test_trained_phrases_are_the_shared_and_train_pools_and_the_caption_words():
    hair = trained_phrases("hair_color")
    assert hair["blond"] == {"blonde", "blonde_golden"}  # shared pool
    assert hair["copper"] == {"red"} and hair["silver gray"] == {"silver_gray"}  # train pool, template caption word
    assert "ginger" not in hair and "grey" not in hair  # eval pool only
    top = trained_phrases("top")
    assert top["a hat"] == {"hat"} and top["a bobble hat"] == {"winter_hat_2"}  # the captions' hat words
    assert normalise("a {c}bobble hat") in top and normalise("a {c}beanie") not in top
    assert trained_phrases("skin")["very dark skin"] == {"black"}
    assert normalise("a {c}hat") == normalise("a {c} hat") == "a hat"


def test_every_eval_phrase_has_its_values_and_every_table_a_column():
    for column, tables in WORD_TABLES.items():
        for table in tables:
            for phrase, values in {**table["both"], **table["eval"]}.items():
                assert eval_values(column, phrase) == frozenset(values.split(", "))
    with pytest.raises(KeyError):
        eval_values("hair_color", "copper")  # a train-pool phrase is not an eval phrase
    assert set(WORD_TABLES) >= {"top", "hair_color", "clothing_color", "skin", "mouth"}
    assert words.HAIR_COLOR in WORD_TABLES["hair_color"]


def fake_encoder(same: dict[str, str]):
    """Texts -> one-hot vectors: a text containing a key of `same` gets the vector of its value's word."""
    vocabulary: dict[str, int] = {}

    def encode(texts):
        rows = []
        for text in texts:
            word = next((v for k, v in same.items() if k in text), text)
            rows.append(vocabulary.setdefault(word, len(vocabulary)))
        out = np.zeros((len(texts), 512))
        out[np.arange(len(texts)), rows] = 1.0
        return out
    return encode


def test_a_new_phrase_is_right_when_the_encoder_puts_it_nearest_a_trained_phrase_of_its_values():
    encode = fake_encoder({"ginger": "with copper", "navy": "with scarlet", "copper": "with copper",
                           "scarlet": "with scarlet"})
    used = {("hair_color", "ginger"), ("clothing_color", "navy"), ("hair_color", "blond")}
    statuses = word_statuses(used, encode)
    assert statuses[("hair_color", "blond")]["status"] == GROUPS[0]
    assert statuses[("hair_color", "ginger")] == {"status": GROUPS[1], "nearest": "copper", "similarity": 1.0}
    assert statuses[("clothing_color", "navy")]["status"] == GROUPS[2]  # scarlet is red, navy is blue_03
    assert statuses[("clothing_color", "navy")]["nearest"] == "scarlet"


def test_a_model_trained_on_every_word_has_no_new_words(tmp_path):
    from ldmkit.evaluation.phrasing_vocabulary import taught_words

    assert trained_phrases("hair_color", "all")["ginger"] == {"red"}
    used = {("hair_color", "ginger"), ("clothing_color", "navy")}
    statuses = word_statuses(used, fake_encoder({}), "all")
    assert {s["status"] for s in statuses.values()} == {GROUPS[0]}
    assert taught_words(tmp_path) == "train"  # no ldmkit.json: nothing recorded
    (tmp_path / "ldmkit.json").write_text('{"dataset": {"builtin": {"phrasings": 2, "phrasing_words": "all"}}}')
    assert taught_words(tmp_path) == "all"
    (tmp_path / "ldmkit.json").write_text('{"dataset": {"builtin": {"phrasings": 2}}}')  # before the option
    assert taught_words(tmp_path) == "train"


def test_recorded_reads_one_value_of_ldmkit_json_and_bad_phrasing_words_are_refused(tmp_path, monkeypatch):
    from ldmkit.models import folder
    from ldmkit.models.folder import recorded

    assert recorded(tmp_path, "training") is None  # no file
    (tmp_path / "ldmkit.json").write_text('{"training": {"data": {"val_fraction": 0.1}}, "name": "m"}')
    assert recorded(tmp_path, "training", "data") == {"val_fraction": 0.1} and recorded(tmp_path, "name") == "m"
    assert recorded(tmp_path, "training", "unet") is None and recorded(tmp_path, "name", "x") is None
    monkeypatch.setattr(folder, "MAX_CONFIG_BYTES", 20)      # an oversized file is not read
    assert recorded(tmp_path, "name") is None
    monkeypatch.undo()
    (tmp_path / "ldmkit.json").write_text("{not json")
    assert recorded(tmp_path, "name") is None
    with pytest.raises(UsageError, match="phrasing_words must be one of train, all"):
        trained_phrases("hair_color", "eval")
