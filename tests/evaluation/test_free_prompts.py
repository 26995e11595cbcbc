"""The free-phrased avatars prompt set (issue 17): its control captions, and `ldmkit eval --prompt-set`."""

import importlib.util
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from ldmkit.data.builtin.avatars import captions_for, random_attributes
from ldmkit.errors import UsageError
from ldmkit.data.builtin.avatar_mentions import mentioned_values
from ldmkit.evaluation.avatars_score import avatars_attribute_scores
from ldmkit.evaluation.free_prompts import NEVER_NAMED, free_prompt, prompt_set

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def _avatars(count: int) -> list[dict]:
    return [random_attributes(random.Random(f"avatars-9-{i}")) for i in range(count)]


def test_the_control_caption_pins_every_asked_attribute_within_the_accepted_values():
    for labels in _avatars(300):
        p = free_prompt(labels)
        assert p.template_caption in captions_for(labels)[1:]
        pinned = mentioned_values(labels, p.template_caption)
        assert p.asked and not set(p.asked) & NEVER_NAMED
        for column, allowed in p.asked.items():
            # a model that draws exactly what the control caption says is scored right on every asked column
            assert labels[column] in allowed and column in pinned and pinned[column] <= allowed, (p, column)
        assert p.text != p.template_caption


def test_prompts_depend_on_the_labels_only():
    rows = _avatars(20)
    assert [free_prompt(r) for r in rows] == [free_prompt(dict(r)) for r in reversed(rows)][::-1]
    free, asked = prompt_set("free-avatars", rows)
    control, asked_control = prompt_set("free-avatars-templates", rows)
    assert asked == asked_control and free == [free_prompt(r).text for r in rows]
    assert control == [free_prompt(r).template_caption for r in rows]
    assert len(set(free)) == len(free)


def test_prompt_set_refusals():
    with pytest.raises(UsageError, match="avatars rows"):
        prompt_set("free-avatars", [{"shape": "square"}])
    with pytest.raises(UsageError, match="prompt-set"):
        prompt_set("captions", _avatars(2))
    from ldmkit.evaluation.run import EvalSettings

    with pytest.raises(UsageError, match="prompt-set"):
        EvalSettings(model=Path("m"), data=Path("d"), out=Path("o"), prompt_set="free")


@pytest.fixture(scope="module")
def avatars_model(tmp_path_factory, one_thread_module):
    import torch

    from ldmkit.data.builtin import build_dataset
    from ldmkit.data.builtin.avatars import avatar_values
    from ldmkit.models.attributes import AttributeClassifier, AttributeClassifierConfig, save_attribute_classifier

    root = tmp_path_factory.mktemp("free_eval")
    model = fx.tiny_model(root / "model", with_clip=False)
    meta = json.loads((model / "ldmkit.json").read_text())
    meta["training"] = {"data": {"val_fraction": 0.0, "test_fraction": 0.3}}
    (model / "ldmkit.json").write_text(json.dumps(meta))
    build_dataset("shapes+avatars", root / "mix", n={"shapes": 4, "avatars": 40}, seed=0, size=32)
    columns = ("top", "mouth", "skin", "hair_color", "eyes")
    accuracy = {"top": 0.96, "mouth": 0.99, "skin": 0.99, "hair_color": 0.97, "eyes": 0.5}
    torch.manual_seed(3)
    classifier = AttributeClassifier(AttributeClassifierConfig(
        columns=columns, vocab={c: avatar_values()[c] for c in columns}, image_size=32, channels=(4,),
        accuracy=accuracy))
    save_attribute_classifier(classifier, model)
    return model, root / "mix"


@pytest.mark.slow
def test_eval_scores_free_prompts_and_their_controls_on_the_same_attributes(avatars_model, tmp_path, monkeypatch,
                                                                             capsys):
    from PIL import Image

    from ldmkit.evaluation.run import EvalSettings, evaluate
    from ldmkit.models.attributes import load_attribute_classifier

    model, data = avatars_model
    classifier = load_attribute_classifier(model)
    tables = {}
    for name in ("free-avatars", "free-avatars-templates"):
        out = tmp_path / name
        metrics = evaluate(EvalSettings(model=model, data=data, out=out, n=5, steps=1, n_boot=50, prompt_set=name))
        assert metrics["data"]["prompt_set"] == name and metrics["data"]["evaluated_images"] == 5
        labels = metrics_labels(metrics, data, model)
        assert all(row["source"] == "avatars" for row in labels)  # the mixture's shapes rows are left out
        prompts, asked = prompt_set(name, labels)
        assert metrics["data"]["prompts"] == prompts
        images = [Image.open(out / r["file"]) for r in metrics["conditions"][0]["images"]]
        expected = avatars_attribute_scores(classifier.predict_images(images), asked, classifier.config.accuracy,
                                            unseen=[False] * 5, n_boot=50)
        tables[name] = metrics["conditions"][0]["metrics"]["avatars"]
        assert tables[name] == json.loads(json.dumps(expected))
        assert "avatars" in metrics["reference"]["vae_round_trip"]
    free, control = tables["free-avatars"], tables["free-avatars-templates"]
    assert free["all"]["counts"] == control["all"]["counts"] and free["excluded"] == control["excluded"]
    from ldmkit.evaluation.phrasing_gap import phrasing_gap

    gap = phrasing_gap(tmp_path / "free-avatars", tmp_path / "free-avatars-templates", n_boot=50)
    assert gap["images"] == free["all"]["images"] and gap["excluded"] == ["eyes"]
    assert gap["free"]["estimate"] == pytest.approx(free["all"]["mean"]["estimate"])
    assert gap["templates"]["estimate"] == pytest.approx(control["all"]["mean"]["estimate"])
    assert gap["difference"]["estimate"] == pytest.approx(gap["free"]["estimate"] - gap["templates"]["estimate"])
    for name, row in gap["per_attribute"].items():
        assert row["n"] == free["all"]["counts"][name]
        assert row["free"]["estimate"] == pytest.approx(free["all"]["per_attribute"][name]["estimate"])
    assert sum(row["n"] for row in gap["per_word"].values()) == sum(free["all"]["counts"].values())
    with pytest.raises(UsageError, match="compares"):
        phrasing_gap(tmp_path / "free-avatars-templates", tmp_path / "free-avatars")
    from ldmkit.evaluation.phrasing_vocabulary import GROUPS, vocabulary_gap

    by_word = vocabulary_gap(tmp_path / "free-avatars", tmp_path / "free-avatars-templates", n_boot=50,
                             encode=lambda texts: np.eye(len(texts)))  # every new phrase nearest the first trained
    assert sum(by_word["groups"][g]["n"] for g in GROUPS) == sum(row["n"] for row in gap["per_word"].values())
    assert by_word["words"].keys() == gap["per_word"].keys()
    for key, word in by_word["words"].items():
        assert word["n"] == gap["per_word"][key]["n"]
        assert word["free"] == pytest.approx(gap["per_word"][key]["free"]["estimate"])
    with pytest.raises(UsageError, match="compares"):
        vocabulary_gap(tmp_path / "free-avatars-templates", tmp_path / "free-avatars", encode=np.eye)
    monkeypatch.syspath_prepend(str(fx.SCRIPTS))  # the script imports its sibling free_phrasing_gap
    fx.load_script("vocabulary_gap").main(tmp_path / "free-avatars", tmp_path / "free-avatars-templates", None)
    lines = capsys.readouterr().out.splitlines()  # the tiny model's own text encoder placed the new phrases
    assert lines[0].startswith(f"{gap['condition']}: {gap['images']} images")
    new = [k for k, w in by_word["words"].items() if w["status"] != GROUPS[0]]
    assert len([line for line in lines if line.startswith("  ") and " -> " in line]) == len(new)


def metrics_labels(metrics: dict, data: Path, model: Path) -> list[dict]:
    """The labels of the evaluated rows: the first n avatars rows of the model's test split."""
    from ldmkit.data import CaptionDataset
    from ldmkit.data.builtin.avatars import is_avatars_row
    from ldmkit.evaluation.attributes import split_rule

    test = split_rule(model).split(CaptionDataset.open(data), "test")
    rows = [dict(s.labels) for s in test.samples if is_avatars_row(s.labels)]
    return rows[:metrics["data"]["evaluated_images"]]


@pytest.mark.slow
def test_model_gap_pairs_two_models_on_the_same_prompts_and_classifier(avatars_model, tmp_path):
    from ldmkit.evaluation.phrasing_gap import model_gap, paired_hits
    from ldmkit.evaluation.run import EvalSettings, Sweep, evaluate
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components

    model, data = avatars_model
    other = tmp_path / "other-model"
    save_components(build_components("tiny", seed=1), other)  # other weights, the same split rule
    meta = json.loads((other / "ldmkit.json").read_text())
    meta["training"] = json.loads((model / "ldmkit.json").read_text())["training"]
    (other / "ldmkit.json").write_text(json.dumps(meta))
    tables = {}
    for name, folder, kwargs in (("base", model, {"attributes": model}), ("other", other, {"attributes": model}),
                                 ("own", model, {}), ("fewer", other, {"attributes": model, "n": 4}),
                                 ("ancestral", model, {"attributes": model, "sampler": "euler_ancestral"}),
                                 ("swept", model, {"attributes": model,
                                                   "sweep": Sweep("sampler", ("euler", "euler_ancestral"))})):
        metrics = evaluate(EvalSettings(model=folder, data=data, out=tmp_path / name, steps=2, n_boot=50,
                                        **{"n": 5, **kwargs}))
        tables[name] = metrics["conditions"][0]["metrics"]["avatars"]["all"]
    gap = model_gap(tmp_path / "base", tmp_path / "other", n_boot=50)
    assert gap["models"] == [str(model), str(other)] and gap["images"] == tables["base"]["images"]
    for key in ("base", "other"):  # the same numbers as each run's own table
        assert gap[key]["estimate"] == pytest.approx(tables[key]["mean"]["estimate"])
        for column, row in gap["per_attribute"].items():
            assert row[key]["estimate"] == pytest.approx(tables[key]["per_attribute"][column]["estimate"])
            assert row["n"] == tables[key]["counts"][column]
    assert gap["difference"]["estimate"] == pytest.approx(gap["other"]["estimate"] - gap["base"]["estimate"])
    assert gap["difference"]["low"] <= gap["difference"]["estimate"] <= gap["difference"]["high"]
    with pytest.raises(UsageError, match="compares two models, or one model with two sampling settings"):
        model_gap(tmp_path / "base", tmp_path / "base")
    # one model, two samplers: the same pairing, the sampling settings reported
    sampler = model_gap(tmp_path / "base", tmp_path / "ancestral", n_boot=50)
    assert sampler["models"] == [str(model)] * 2
    assert [s["sampler"] for s in sampler["sampling"]] == [None, "euler_ancestral"]
    assert [s["karras"] for s in sampler["sampling"]] == [False, False]
    before_karras = json.loads((tmp_path / "base" / "metrics.json").read_text())  # a run from before eval --karras
    del before_karras["settings"]["karras"], before_karras["settings"]["seed_per_image"]  # nor --seed-per-image
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(before_karras))
    with pytest.raises(UsageError, match="same sampling settings"):  # no key means karras off
        model_gap(tmp_path / "old", tmp_path / "base")
    karras = json.loads((tmp_path / "base" / "metrics.json").read_text())
    karras["settings"]["karras"] = True
    (tmp_path / "karras").mkdir()
    (tmp_path / "karras" / "metrics.json").write_text(json.dumps(karras))
    with pytest.raises(UsageError, match="differ in karras"):  # e.g. free vs template words: one sampling for both
        paired_hits(tmp_path / "base", tmp_path / "karras", condition=None, may_differ=("prompt_set",))
    per_image = json.loads((tmp_path / "other" / "metrics.json").read_text())
    per_image["settings"]["seed_per_image"] = True
    (tmp_path / "per-image").mkdir()
    (tmp_path / "per-image" / "metrics.json").write_text(json.dumps(per_image))
    with pytest.raises(UsageError, match="differ in seed_per_image"):  # other noise per image: not paired
        model_gap(tmp_path / "base", tmp_path / "per-image")
    assert sampler["other"]["estimate"] == pytest.approx(tables["ancestral"]["mean"]["estimate"])
    # two conditions of one --sweep run, paired: each condition's own sampling settings and numbers
    swept = json.loads((tmp_path / "swept" / "metrics.json").read_text())
    own = {c["label"]: c["metrics"]["avatars"]["all"]["mean"]["estimate"] for c in swept["conditions"]}
    within = model_gap(tmp_path / "swept", tmp_path / "swept", condition="sampler=euler",
                       other_condition="sampler=euler_ancestral", n_boot=50)
    assert within["condition"] == "sampler=euler vs sampler=euler_ancestral"
    assert [s["sampler"] for s in within["sampling"]] == ["euler", "euler_ancestral"]
    assert within["base"]["estimate"] == pytest.approx(own["sampler=euler"])
    assert within["other"]["estimate"] == pytest.approx(own["sampler=euler_ancestral"])
    # the two conditions of the tiny sweep score alike, so a swapped pair would pass the lines above: give the euler
    # condition the other model's images (0.0 against the ancestral condition's 0.17) and read each side again
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "swept", mixed)
    shutil.copytree(tmp_path / "other" / "images", mixed / "images-other")
    other_files = {r["prompt_index"]: r["file"] for r in json.loads((tmp_path / "other" / "metrics.json").read_text())
                   ["conditions"][0]["images"]}
    for record in swept["conditions"][0]["images"]:
        record["file"] = other_files[record["prompt_index"]].replace("images/", "images-other/", 1)
    (mixed / "metrics.json").write_text(json.dumps(swept))
    assert tables["other"]["mean"]["estimate"] != pytest.approx(own["sampler=euler_ancestral"])
    apart = model_gap(mixed, mixed, condition="sampler=euler", other_condition="sampler=euler_ancestral", n_boot=50)
    assert apart["base"]["estimate"] == pytest.approx(tables["other"]["mean"]["estimate"])
    assert apart["other"]["estimate"] == pytest.approx(own["sampler=euler_ancestral"])
    across = model_gap(tmp_path / "base", tmp_path / "swept", other_condition="sampler=euler_ancestral",
                       n_boot=50)  # a single run against one condition of a sweep run
    assert across["condition"].endswith(" vs sampler=euler_ancestral")
    assert across["base"] == sampler["base"]
    assert across["other"]["estimate"] == pytest.approx(own["sampler=euler_ancestral"])
    with pytest.raises(UsageError, match="same sampling settings"):
        model_gap(tmp_path / "swept", tmp_path / "swept", condition="sampler=euler", other_condition="sampler=euler")
    with pytest.raises(UsageError, match="no condition 'sampler=ddim'"):
        model_gap(tmp_path / "swept", tmp_path / "swept", condition="sampler=euler", other_condition="sampler=ddim")
    with pytest.raises(UsageError, match="choose one"):  # the base's condition is never silently the first
        model_gap(tmp_path / "swept", tmp_path / "swept", other_condition="sampler=euler")
    with pytest.raises(UsageError, match="different prompts"):
        model_gap(tmp_path / "base", tmp_path / "fewer")
    with pytest.raises(UsageError, match="attributes"):  # each model read by its own classifier
        model_gap(tmp_path / "own", tmp_path / "other")
    with pytest.raises(UsageError, match="metrics.json"):
        model_gap(tmp_path / "base", tmp_path)


def test_phrasing_gap_compares_one_named_condition_of_sweep_runs():
    from ldmkit.evaluation.phrasing_gap import _condition_index

    def runs(*labels_per_run):
        return [{"conditions": [{"label": label} for label in labels]} for labels in labels_per_run]

    assert _condition_index(runs(["model defaults"], ["model defaults"]), None) == (0, 0)
    swept = runs(["guidance=7.5", "guidance=10.0"], ["guidance=7.5", "guidance=10.0"])
    assert _condition_index(swept, "guidance=10.0") == (1, 1)
    assert _condition_index(swept, "guidance=10.0", "guidance=7.5") == (1, 0)  # one condition against another
    assert _condition_index(runs(["guidance=7.5"], ["steps=10", "guidance=7.5"]), None, "guidance=7.5") == (0, 1)
    with pytest.raises(UsageError, match=r"2 conditions \(guidance=7.5, guidance=10.0\); choose one"):
        _condition_index(swept, None)  # never silently the first
    with pytest.raises(UsageError, match="no condition 'guidance=5'"):
        _condition_index(swept, "guidance=5")
    with pytest.raises(UsageError, match="different conditions"):
        _condition_index(runs(["guidance=7.5"], ["guidance=10.0"]), "guidance=7.5")


def test_an_eval_condition_is_labelled_with_the_settings_it_overrides():
    from ldmkit.evaluation.run import EvalSettings, Sweep, _conditions

    def labels(**kw):
        return [c.label for c in _conditions(EvalSettings(model=Path("m"), data=Path("d"), out=Path("o"), **kw))]

    assert labels() == ["model defaults"]
    assert labels(guidance=7.5) == ["guidance=7.5"]  # was "model defaults" although guidance 7.5 was used
    assert labels(steps=30, sampler="euler") == ["steps=30, sampler=euler"]
    assert labels(sweep=Sweep("guidance", (3.0, 5.0))) == ["guidance=3.0", "guidance=5.0"]
    assert labels(karras=True, guidance_rescale=0.0) == ["guidance_rescale=0.0, karras=True"]  # 0.0 is explicit
    assert labels(sweep=Sweep("guidance_rescale", (0.0, 0.7))) == ["guidance_rescale=0.0", "guidance_rescale=0.7"]


def test_the_new_words_set_asks_colours_in_words_no_pool_teaches_controlled_by_template_1():
    from ldmkit.data.builtin import avatar_phrasings as ph

    rows = _avatars(200)
    free, asked = prompt_set("free-avatars-new-words", rows)
    control, asked_control = prompt_set("free-avatars-new-words-templates", rows)
    assert asked == asked_control and len(set(free)) > 150
    new_words = {*ph.HAIR_COLOR["new"], *ph.CLOTH_COLOR["new"]}
    for labels, text, caption, wanted in zip(rows, free, control, asked):
        p = free_prompt(labels, "new")
        assert (p.text, p.template_caption) == (text, caption) and caption == captions_for(labels)[1]
        assert wanted and set(wanted) <= ph.NEW_COLUMNS and set(p.words.values()) <= new_words
        pinned = mentioned_values(labels, caption)
        assert all(labels[c] in v and pinned[c] <= v for c, v in wanted.items())
    assert prompt_set("free-avatars", rows)[0] != free  # the eval pool's set is unchanged and different
    with pytest.raises(UsageError, match="not a free prompt set"):
        from ldmkit.evaluation.free_prompts import free_set

        free_set("captions")


@pytest.mark.slow
def test_eval_and_phrasing_gap_run_the_new_words_pair(avatars_model, tmp_path):
    from ldmkit.evaluation.phrasing_gap import phrasing_gap
    from ldmkit.evaluation.run import EvalSettings, evaluate

    model, data = avatars_model
    for name in ("free-avatars-new-words", "free-avatars-new-words-templates", "free-avatars-templates"):
        metrics = evaluate(EvalSettings(model=model, data=data, out=tmp_path / name, n=5, steps=1, n_boot=20,
                                        prompt_set=name))
        assert metrics["data"]["prompts"] == prompt_set(name, metrics_labels(metrics, data, model))[0]
    gap = phrasing_gap(tmp_path / "free-avatars-new-words", tmp_path / "free-avatars-new-words-templates", n_boot=20)
    assert gap["images"] > 0 and set(gap["per_attribute"]) <= {"hair_color", "clothing_color"}
    with pytest.raises(UsageError, match="compares"):  # a free set with another set's control
        phrasing_gap(tmp_path / "free-avatars-new-words", tmp_path / "free-avatars-templates")
