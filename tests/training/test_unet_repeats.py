"""unet.repeats: training images that match a label filter come k times per epoch (issue 17's emoji balance)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.recipes import LoraRecipe, UNetRecipe, UNetSection
from ldmkit.training.sampler import MAX_REPEAT, check_repeats, repeated_rows
from ldmkit.training.unet import UNetTask

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
FAST = ["train.steps=2", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "data.builtin_n=16"]


def test_each_row_takes_the_first_rule_it_matches():
    labels = [{"source": "emoji", "tone": "none"}, {"source": "emoji", "tone": "dark"}, {"source": "avatars"}]
    rules = check_repeats([{"where": {"source": "emoji", "tone": "none"}, "times": 3},
                           {"where": {"source": "emoji"}, "times": 2}])
    assert repeated_rows(labels, rules) == [0, 0, 0, 1, 1, 2]
    assert repeated_rows(labels, ()) == [0, 1, 2]


def test_a_rule_without_effect_is_an_error():
    labels = [{"source": "emoji"}, {"source": "avatars"}]
    with pytest.raises(UsageError, match=r"unet.repeats\[0\].*no effect"):
        repeated_rows(labels, check_repeats([{"where": {"source": "shapes"}, "times": 2}]))
    with pytest.raises(UsageError, match=r"unet.repeats\[1\].*earlier rule"):  # every match taken by rule 0
        repeated_rows(labels, check_repeats([{"where": {"source": "emoji"}, "times": 2},
                                             {"where": {"source": "emoji"}, "times": 3}]))


@pytest.mark.parametrize("bad", [{"where": {"source": "emoji"}}, {"where": {}, "times": 2},
                                 {"where": {"source": "emoji"}, "times": 0},
                                 {"where": {"source": "emoji"}, "times": MAX_REPEAT + 1},
                                 {"where": {"source": "emoji"}, "times": True},
                                 {"where": {"source": "emoji"}, "times": 2, "weight": 1}, "source=emoji"])
def test_bad_rules_are_one_line_errors(bad):
    with pytest.raises(UsageError, match=r"unet.repeats"):
        UNetSection(repeats=[bad])
    with pytest.raises(UsageError, match="at most"):
        check_repeats([{"where": {"a": "b"}, "times": 2}] * 65)


def test_repeats_are_refused_where_they_have_no_effect(tmp_path):
    rule = ["unet.repeats=[{where: {shape: circle}, times: 2}]"]
    with pytest.raises(UsageError, match="no effect in `train lora`"):
        load_recipe(TINY, LoraRecipe, ["lora.rank=2", *rule])
    (tmp_path / "subject").mkdir()
    with pytest.raises(UsageError, match="with dreambooth"):
        UNetRecipe(unet=UNetSection(repeats=({"where": {"shape": "circle"}, "times": 2},)),
                   dreambooth={"instance_data": str(tmp_path / "subject"), "instance_prompt": "a sks dog"})


def test_the_epoch_runs_over_the_repeated_rows(tmp_path):
    torch.set_num_threads(1)
    plain = UNetTask(load_recipe(TINY, UNetRecipe, FAST), tmp_path / "plain")
    shapes = Counter(s.labels["shape"] for s in plain.train.samples)
    shape = shapes.most_common(1)[0][0]
    recipe = load_recipe(TINY, UNetRecipe, [*FAST, f"unet.repeats=[{{where: {{shape: {shape}}}, times: 3}}]"])
    task = UNetTask(recipe, tmp_path / "repeated")
    assert task.num_samples() == plain.num_samples() + 2 * shapes[shape]
    g = torch.Generator().manual_seed(0)
    batch = task.batch(list(range(task.num_samples())), g)
    assert len(batch["latents"]) == task.num_samples()
    labels = {s.image_id: s.labels for s in task.train.samples}
    rows = [labels[task.cache.image_ids[r]]["shape"] for r in task.rows]
    assert Counter(rows)[shape] == 3 * shapes[shape] and len(set(task.rows)) == len(task.cache)
