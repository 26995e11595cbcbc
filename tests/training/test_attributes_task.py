"""The attribute classifier trainer: set loss against closed forms, value sets, a short run, exact reload."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.errors import DataError, ModelFolderError, UnsafeFileError
from ldmkit.data.builtin.avatars import avatars_value_sets
from ldmkit.models.attributes import AttributeClassifierConfig, load_attribute_classifier, save_attribute_classifier
from ldmkit.training.attributes_task import held_out_accuracy, random_shifts, set_masks, set_nll, value_sets
from ldmkit.training.recipes import AttributesRecipe
from ldmkit.training.trainers import train_task

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "attributes-avatars.yaml"
AVATAR = {"top": "bob", "hair_color": "red", "hat_color": "none", "skin": "pale", "eyes": "wink",
          "eyebrows": "angry", "mouth": "smile", "facial_hair": "none", "accessory": "sunglasses",
          "clothing": "hoodie", "clothing_color": "blue_01", "background": "pink"}


def test_set_nll_is_cross_entropy_for_one_value_and_zero_for_all():
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 3, 1, 4])
    one = torch.nn.functional.one_hot(target, 5).bool()
    assert float(set_nll(logits, one)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)))
    assert float(set_nll(logits, torch.ones(4, 5, dtype=torch.bool))) == 0.0
    two = one.clone()
    two[0, 1] = True  # row 0 may be value 0 or 1: -log(p0 + p1)
    p = logits.softmax(1)
    expected = (-math.log(p[0, 0] + p[0, 1]) - sum(math.log(p[i, target[i]]) for i in range(1, 4))) / 4
    assert float(set_nll(logits, two)) == pytest.approx(expected, rel=1e-5)


def test_avatar_sets_follow_the_captions():
    sets = avatars_value_sets(AVATAR)
    assert sets["eyes"] == frozenset(avatars_value_sets({**AVATAR, "eyes": "cry"})["eyes"])  # hidden by sunglasses
    assert len(sets["eyes"]) == 12
    assert sets["eyebrows"] == {"angry", "angry_natural"}  # both read "angry eyebrows"
    assert sets["hair_color"] == {"red"} and sets["accessory"] == {"sunglasses"}
    assert len(sets["hat_color"]) == 15  # no hat: its colour is never shown
    bald = avatars_value_sets({**AVATAR, "top": "no_hair"})
    assert len(bald["hair_color"]) == 10  # bald and beardless: hair colour invisible


def test_value_sets_of_other_rows_are_their_labels_and_blank_is_not_applicable():
    assert value_sets({"shape": "square", "color": ""}, ["shape", "color"]) == {"shape": frozenset({"square"})}
    mixed = value_sets({**AVATAR, "source": "avatars", "emoji_group": ""}, ["eyes", "source", "emoji_group"])
    assert set(mixed) == {"eyes", "source"} and len(mixed["eyes"]) == 12


def test_held_out_accuracy_and_majority_by_hand():
    config = AttributeClassifierConfig(columns=("c",), vocab={"c": ("a", "b", "x")}, image_size=8, channels=(4,))
    rows = [{"c": frozenset({"a"})}, {"c": frozenset({"a", "b"})}, {"c": frozenset({"b"})}, {}]
    masks = set_masks(rows, config)
    predicted = [{"c": "a"}, {"c": "b"}, {"c": "a"}, {"c": "x"}]
    result = held_out_accuracy(predicted, masks, config)
    assert result["accuracy"]["c"] == pytest.approx(2 / 3)  # row 3 has no value: not scored
    assert result["majority"]["c"] == pytest.approx(2 / 3)  # answering "a" (or "b") is right for 2 of 3
    assert result["images"]["c"] == 3


def test_shifts_translate_without_mirroring():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_shifts(x, 2, g)
    assert out.shape == x.shape
    for img, src in zip(out, x):  # every row of a shifted image is increasing left to right: no flip
        assert bool((img[..., 1:] >= img[..., :-1]).all())
    assert torch.equal(random_shifts(x, 0, g), x)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("attributes")
    recipe = load_recipe(RECIPE, AttributesRecipe, [
        "data.builtin_n=48", "data.image_size=32", "data.val_fraction=0.25", "attributes.channels=[8, 16]",
        "attributes.columns=[background, clothing_color, skin]", "train.steps=30", "train.batch_size=16",
        "train.warmup_steps=0", "train.lr=0.01", "train.log_every=1", "train.checkpoint_every=0",
        "train.validate_every=0", "train.progress_bar=false"])
    result = train_task("attributes", recipe, root / "run")
    return root / "run", result


def test_short_run_learns_and_reports_held_out_accuracy(trained):
    run_dir, result = trained
    assert result.final_dir == run_dir / "final" and not result.interrupted
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    report = json.loads((run_dir / "final" / "attributes_report.json").read_text())
    assert set(report["accuracy"]) == {"background", "clothing_color", "skin"}
    config = json.loads((run_dir / "final" / "attributes" / "config.json").read_text())
    assert config["accuracy"] == report["accuracy"] and len(config["data_hash"]) == 16
    assert report["held_out_images"] > 0 and report["train_images"] + report["held_out_images"] == 48


def test_reload_gives_bitwise_the_same_predictions(trained, tmp_path):
    run_dir, _ = trained
    model = load_attribute_classifier(run_dir / "final")
    again = load_attribute_classifier(run_dir / "final" / "attributes")  # the folder itself works too
    pixels = torch.rand(5, 3, 32, 32) * 2 - 1
    for c in model.config.columns:
        assert torch.equal(model(pixels)[c], again(pixels)[c])
    save_attribute_classifier(again, tmp_path / "copy")
    copy = load_attribute_classifier(tmp_path / "copy")
    assert copy.predict(pixels) == model.predict(pixels)
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), model.state_dict().values()))


def test_loading_never_unpickles_and_names_what_is_missing(trained, tmp_path):
    import shutil

    with pytest.raises(ModelFolderError, match="no attribute classifier"):
        load_attribute_classifier(tmp_path)
    folder = tmp_path / "m" / "attributes"
    shutil.copytree(trained[0] / "final" / "attributes", folder)
    (folder / "extra.bin").write_bytes(b"\x80\x04not a real pickle")  # beside the safetensors: never opened
    again = load_attribute_classifier(tmp_path / "m")
    original = load_attribute_classifier(trained[0] / "final")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), original.state_dict().values()))
    (folder / "model.safetensors").write_bytes(b"\x80\x04not safetensors either")
    with pytest.raises((UnsafeFileError, ModelFolderError)):
        load_attribute_classifier(tmp_path / "m")


def test_where_restricts_rows_and_refuses_when_nothing_matches(tmp_path):
    recipe = load_recipe(RECIPE, AttributesRecipe, ["data.builtin_n=8", "data.image_size=32",
                                                     "attributes.where={source: emoji}"])
    with pytest.raises(DataError, match="attributes.where"):
        train_task("attributes", recipe, tmp_path / "run")


def test_cli_shortcuts_become_overrides(tmp_path):
    from ldmkit.cli import main

    assert main(["train", "attributes", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4",
                 "--image-size", "32", "--where", "skin=pale", "--set", "data.builtin_n=24",
                 "--set", "attributes.channels=[4]", "--set", "attributes.columns=[background]",
                 "--set", "train.progress_bar=false", "--set", "data.val_fraction=0.25"]) == 0
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "skin: pale" in saved and "steps: 2" in saved and "lr: 0.002" in saved  # recipe defaults kept
    assert load_attribute_classifier(tmp_path / "run" / "final").config.columns == ("background",)


def test_stages_files_accept_the_attributes_trainer(tmp_path):
    from ldmkit.workflows.stages import load_stages
    from ldmkit.training.trainers import TRAINERS

    stages = tmp_path / "stages.yaml"
    stages.write_text(f"stages:\n  - {{name: attributes, trainer: attributes, config: {RECIPE}, "
                      "set: ['attributes.where={source: avatars}']}\n")
    assert [s.trainer for s in load_stages(stages)] == ["attributes"] and "attributes" in TRAINERS
    recipe = load_recipe(RECIPE, AttributesRecipe, ["attributes.where={source: avatars}"])
    assert recipe.attributes.where == {"source": "avatars"} and recipe.data.image_size == 64
