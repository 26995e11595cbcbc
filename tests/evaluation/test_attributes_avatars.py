"""Avatars attribute scoring in eval: what a prompt mentions, exclusion, hand-computed scores, holdout, --where."""

import importlib.util
import json
from pathlib import Path

import pytest

from ldmkit.data.builtin.avatars import captions_for
from ldmkit.evaluation.attributes import SplitRule, split_rule
from ldmkit.data.builtin.avatar_mentions import mentioned_values
from ldmkit.evaluation.avatars_score import avatars_attribute_scores

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

FACE = {"top": "bob", "hair_color": "red", "hat_color": "none", "skin": "pale", "eyes": "wink",
        "eyebrows": "angry", "mouth": "smile", "facial_hair": "none", "accessory": "sunglasses",
        "clothing": "hoodie", "clothing_color": "blue_01", "background": "pink"}


def test_mentioned_attributes_of_known_captions():
    first, second, third = captions_for(FACE)
    assert first == "a person with a red bob, sunglasses and angry eyebrows, smiling"
    got = mentioned_values(FACE, first)
    # sunglasses hide the eyes; template 0 says nothing of skin, clothes or background
    assert set(got) == {"top", "hair_color", "accessory", "eyebrows", "mouth"}
    assert got["eyebrows"] == {"angry", "angry_natural"} and got["top"] == {"bob"}
    assert set(mentioned_values(FACE, second)) == {"top", "hair_color", "skin", "clothing", "clothing_color",
                                                   "background", "mouth"}
    plain = {**FACE, "accessory": "none", "eyes": "default", "eyebrows": "default"}
    text = captions_for(plain)[0]
    assert text == "a person with a red bob, no glasses, smiling"
    assert mentioned_values(plain, text) == {"top": {"bob"}, "hair_color": {"red"}, "accessory": {"none"},
                                             "mouth": {"smile"}}  # default eyes/eyebrows: silent
    hat = {**FACE, "top": "turban", "hat_color": "red", "accessory": "none", "eyes": "cry"}
    assert "hair_color" not in mentioned_values(hat, captions_for(hat)[0])  # under a hat without a beard
    assert mentioned_values(hat, captions_for(hat)[0])["hat_color"] == {"red"}
    assert mentioned_values(FACE, "a person with a red bob") == {}  # not a caption the builder writes
    assert mentioned_values({"shape": "square"}, "a red square") == {}


def test_scores_by_hand_with_exclusion_and_seen_unseen():
    predicted = [{"mouth": "smile", "eyes": "wink", "top": "bob"},
                 {"mouth": "sad", "eyes": "cry", "top": "bob"},
                 {"mouth": "smile", "eyes": "wink", "top": "fro"}]
    asked = [{"mouth": frozenset({"smile"}), "eyes": frozenset({"wink"}), "skin": frozenset({"pale"})},
             {"mouth": frozenset({"smile"}), "top": frozenset({"bob"})},
             {"mouth": frozenset({"smile", "big_smile"}), "top": frozenset({"bob"})}]
    accuracy = {"mouth": 0.99, "eyes": 0.90, "top": 0.97}  # eyes below 95%; no skin head at all
    table = avatars_attribute_scores(predicted, asked, accuracy, unseen=[False, True, False], n_boot=50)
    assert table["excluded"] == {"eyes": 0.90, "skin": None}
    every = table["all"]
    assert every["per_attribute"]["mouth"]["estimate"] == pytest.approx(2 / 3)
    assert every["per_attribute"]["top"]["estimate"] == pytest.approx(1 / 2)
    assert every["counts"] == {"mouth": 3, "top": 2} and every["images"] == 3
    assert every["mean"]["estimate"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)  # per image, then over images
    assert table["unseen"]["mean"]["estimate"] == pytest.approx(1 / 2) and table["unseen"]["images"] == 1
    assert table["seen"]["mean"]["estimate"] == pytest.approx(3 / 4)
    low, high = every["mean"]["low"], every["mean"]["high"]
    assert low <= every["mean"]["estimate"] <= high


def test_split_rule_comes_from_the_models_training_record(tmp_path):
    assert split_rule(tmp_path) == SplitRule()
    (tmp_path / "ldmkit.json").write_text(json.dumps({"training": {"data": {
        "val_fraction": 0.02, "test_fraction": 0.05, "holdout": [{"mouth": "sad"}]}}}))
    rule = split_rule(tmp_path)
    assert (rule.val, rule.test, rule.holdout) == (0.02, 0.05, ({"mouth": "sad"},))


@pytest.fixture(scope="module")
def avatars_eval(tmp_path_factory, one_thread_module):
    import torch

    from ldmkit.data.builtin import build_dataset
    from ldmkit.data.builtin.avatars import avatar_values
    from ldmkit.models.attributes import AttributeClassifier, AttributeClassifierConfig, save_attribute_classifier

    root = tmp_path_factory.mktemp("avatars_eval")
    model = fx.tiny_model(root / "model", with_clip=False)
    meta = json.loads((model / "ldmkit.json").read_text())
    holdout = [{"mouth": "smile"}]
    meta["training"] = {"data": {"val_fraction": 0.0, "test_fraction": 0.3, "holdout": holdout}}
    (model / "ldmkit.json").write_text(json.dumps(meta))
    data = root / "avatars"
    build_dataset("avatars", data, n=40, seed=0, size=32)
    columns = ("top", "mouth", "eyes")
    vocab = {c: avatar_values()[c] for c in columns}
    torch.manual_seed(3)
    classifier = AttributeClassifier(AttributeClassifierConfig(columns=columns, vocab=vocab, image_size=32,
                                                               channels=(4,), accuracy={"top": 0.96, "mouth": 0.99,
                                                                                        "eyes": 0.5}))
    save_attribute_classifier(classifier, model)
    return model, data, holdout


def test_eval_scores_avatars_with_the_models_classifier(avatars_eval, tmp_path):
    from PIL import Image

    from ldmkit.data import CaptionDataset
    from ldmkit.evaluation.run import EvalSettings, evaluate
    from ldmkit.models.attributes import load_attribute_classifier

    model, data, holdout = avatars_eval
    metrics = evaluate(EvalSettings(model=model, data=data, out=tmp_path / "o", n=6, steps=1, n_boot=50))
    assert metrics["data"]["split_rule"]["holdout"] == holdout
    test_ids = {s.image_id for s in SplitRule(0.0, 0.3, tuple(holdout)).split(CaptionDataset.open(data), "test")}
    smiling = {s.image_id for s in CaptionDataset.open(data).samples if s.labels["mouth"] == "smile"}
    assert smiling <= test_ids  # the held-out combination is evaluated, never in train
    table = metrics["conditions"][0]["metrics"]["avatars"]
    assert "eyes" not in table["all"]["per_attribute"] and "skin" not in table["all"]["per_attribute"]
    assert table["excluded"]["eyes"] == 0.5 and table["seen"]["images"] >= 1 and table["unseen"]["images"] >= 1
    classifier = load_attribute_classifier(model)
    images = [Image.open(tmp_path / "o" / r["file"]) for r in metrics["conditions"][0]["images"]]
    labels = [s.labels for s in SplitRule(0.0, 0.3, tuple(holdout)).split(CaptionDataset.open(data), "test").samples][:6]
    asked = [mentioned_values(row, prompt) for row, prompt in zip(labels, metrics["data"]["prompts"])]
    unseen = [row["mouth"] == "smile" for row in labels]
    expected = avatars_attribute_scores(classifier.predict_images(images), asked, classifier.config.accuracy,
                                        unseen=unseen, n_boot=50)
    assert table == json.loads(json.dumps(expected))
    assert "avatars attribute accuracy" in (tmp_path / "o" / "report.html").read_text()
    assert "real_images" in metrics["reference"] and "avatars" in metrics["reference"]["real_images"]


def test_where_restricts_the_evaluated_rows(avatars_eval, tmp_path):
    from ldmkit.evaluation.run import EvalSettings, _held_out

    model, data, holdout = avatars_eval
    rule = split_rule(model)
    settings = EvalSettings(model=model, data=data, out=tmp_path / "o", n=50, where={"mouth": "smile"})
    held, prompts, labels = _held_out(settings, rule)
    assert labels and all(row["mouth"] == "smile" for row in labels) and len(held) == len(labels)
    everything, _, all_labels = _held_out(EvalSettings(model=model, data=data, out=tmp_path / "p", n=50), rule)
    assert len(labels) == sum(row["mouth"] == "smile" for row in all_labels) < len(all_labels)
    from ldmkit.errors import DataError

    with pytest.raises(DataError, match="with labels"):
        _held_out(EvalSettings(model=model, data=data, out=tmp_path / "q", where={"mouth": "nope"}), rule)


def test_sample_seed_draws_n_images_in_split_order_and_puts_them_first(avatars_eval, tmp_path):
    from ldmkit.errors import UsageError
    from ldmkit.evaluation.run import EvalSettings, _held_out

    model, data, holdout = avatars_eval
    rule = split_rule(model)
    first = _held_out(EvalSettings(model=model, data=data, out=tmp_path / "a", n=3), rule)
    whole = [s.image_id for s in first[0].samples]
    assert len(whole) > 6
    drawn = [_held_out(EvalSettings(model=model, data=data, out=tmp_path / "b", n=3, sample_seed=seed), rule)
             for seed in (1, 1, 2)]
    ids = [[s.image_id for s in held.samples] for held, _, _ in drawn]
    assert ids[0] == ids[1] != ids[2]  # seeded: the same draw twice, another seed another draw
    for (held, prompts, labels), order in zip(drawn, ids):
        assert sorted(order) == sorted(whole)  # every image stays in the real-vs-real reference
        chosen = order[:3]
        assert chosen == [i for i in whole if i in chosen]  # in split order
        assert prompts == [held.samples[k].captions[0] for k in range(3)] and len(labels) == 3
    assert ids[0][:3] != whole[:3] or ids[2][:3] != whole[:3]
    with pytest.raises(UsageError, match="--sample-seed has no effect: --n 999 takes all"):
        _held_out(EvalSettings(model=model, data=data, out=tmp_path / "c", n=999, sample_seed=1), rule)
    for bad in (-1, 2**32, True, 1.5):
        with pytest.raises(UsageError, match="--sample-seed must be an integer"):
            EvalSettings(model=model, data=data, out=tmp_path / "d", sample_seed=bad)


def test_cli_where_parses_pairs():
    from ldmkit.cli.eval import parse_where
    from ldmkit.errors import UsageError

    assert parse_where(["source=avatars", "skin=pale"]) == {"source": "avatars", "skin": "pale"}
    with pytest.raises(UsageError, match="COLUMN=VALUE"):
        parse_where(["avatars"])
