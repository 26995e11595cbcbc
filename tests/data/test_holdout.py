"""Held-out attribute combinations: every matching image goes to test, nothing else moves."""

from __future__ import annotations

import pytest

from ldmkit.config import load_recipe
from ldmkit.data.splits import SplitSpec, check_holdout, matches_holdout, split_of, split_with_holdout
from ldmkit.errors import UsageError
from ldmkit.training.recipes import DataSection, UNetRecipe

HOLDOUT = ({"hair_color": "red", "accessory": "sunglasses"}, {"mouth": "sad"})


def _labels(i: int) -> dict[str, str]:
    return {"hair_color": ["red", "black"][i % 2], "accessory": ["sunglasses", "none", "round"][i % 3],
            "mouth": ["sad", "smile", "eating", "serious", "tongue"][i % 5]}


def test_matching_is_all_columns_of_any_combination():
    assert matches_holdout({"hair_color": "red", "accessory": "sunglasses", "mouth": "smile"}, HOLDOUT)
    assert matches_holdout({"hair_color": "black", "accessory": "none", "mouth": "sad"}, HOLDOUT)
    assert not matches_holdout({"hair_color": "red", "accessory": "none", "mouth": "smile"}, HOLDOUT)
    assert not matches_holdout({"accessory": "sunglasses"}, HOLDOUT)  # a missing column never matches
    assert not matches_holdout({"mouth": "sad"}, ())


def test_every_matching_image_is_in_test_and_the_rest_keep_their_hash_split():
    spec = SplitSpec(val=0.1, test=0.1)
    ids = [f"images/{i:05d}.png" for i in range(600)]
    for i, image_id in enumerate(ids):
        got = split_with_holdout(image_id, _labels(i), spec, HOLDOUT)
        if matches_holdout(_labels(i), HOLDOUT):
            assert got == "test"
        else:
            assert got == split_of(image_id, spec)
    moved = sum(matches_holdout(_labels(i), HOLDOUT) and split_of(ids[i], spec) != "test" for i in range(600))
    assert moved > 50  # the rule did move images (about 80% of ~1/3 of them)


def test_run_split_with_holdout_trains_on_no_matching_image(tmp_path):
    from ldmkit.data import CaptionDataset
    from ldmkit.data.builtin import build_dataset
    from ldmkit.training.run_data import split

    build_dataset("shapes", tmp_path / "ds", n=120, seed=0, size=32)
    dataset = CaptionDataset.open(tmp_path / "ds")
    column, value = next((k, v) for k, v in dataset.samples[0].labels.items())
    data = DataSection(path=str(tmp_path / "ds"), val_fraction=0.1, test_fraction=0.1, holdout=({column: value},))
    parts = {name: split(dataset, data, name) for name in ("train", "val", "test")}
    matching = {s.image_id for s in dataset.samples if s.labels.get(column) == value}
    assert matching and matching <= {s.image_id for s in parts["test"].samples}
    assert not matching & {s.image_id for name in ("train", "val") for s in parts[name].samples}
    assert sum(len(p) for p in parts.values()) == len(dataset)  # a partition: nothing lost or doubled
    plain = DataSection(path=str(tmp_path / "ds"), val_fraction=0.1, test_fraction=0.1)
    assert [s.image_id for s in split(dataset, plain, "train").samples] == \
        [s.image_id for s in dataset.split("train", SplitSpec(val=0.1, test=0.1)).samples]  # unset: as before


def test_holdout_in_recipes_and_errors(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {builtin: shapes, holdout: [{shape: square, color: red}]}\n")
    assert load_recipe(recipe, UNetRecipe).data.holdout == ({"shape": "square", "color": "red"},)
    over = load_recipe(recipe, UNetRecipe, ["data.holdout=[{mouth: sad}]"])
    assert over.data.holdout == ({"mouth": "sad"},)
    with pytest.raises(UsageError, match=r"holdout\[0\]"):
        check_holdout([{}])
    with pytest.raises(UsageError, match="list of label combinations"):
        check_holdout({"mouth": "sad"})
    with pytest.raises(UsageError, match="holdout"):
        load_recipe(recipe, UNetRecipe, ["data.holdout=[{mouth: 3}]"])


def test_training_and_evaluation_split_with_the_one_dataset_method(tmp_path):
    """CaptionDataset.split(name, spec, holdout) is the split: training's (run_data.split) and evaluation's
    (SplitRule.split) give exactly its images, so eval's test split holds no training image."""
    from ldmkit.data import CaptionDataset
    from ldmkit.data.builtin import build_dataset
    from ldmkit.evaluation.attributes import SplitRule
    from ldmkit.training.run_data import split

    build_dataset("shapes", tmp_path / "ds", n=120, seed=0, size=32)
    dataset = CaptionDataset.open(tmp_path / "ds")
    column, value = next((k, v) for k, v in dataset.samples[0].labels.items())
    holdout = ({column: value},)
    spec = SplitSpec(val=0.1, test=0.2)
    data = DataSection(path=str(tmp_path / "ds"), val_fraction=0.1, test_fraction=0.2, holdout=holdout)
    rule = SplitRule(val=0.1, test=0.2, holdout=holdout)
    for name in ("train", "val", "test"):
        ids = [s.image_id for s in dataset.split(name, spec, holdout).samples]
        assert ids == [s.image_id for s in split(dataset, data, name).samples]
        assert ids == [s.image_id for s in rule.split(dataset, name).samples]
    assert len(dataset.split("test", spec, holdout)) > len(dataset.split("test", spec))  # the holdout moved some
