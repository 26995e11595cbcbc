"""`evaluate` / `ldmkit eval` end to end on a tiny model, a tiny dual encoder and tiny datasets."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ldmkit.cli import main
from ldmkit.data.dataset import CaptionDataset
from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.evaluation.features import image_embeddings
from ldmkit.evaluation.frechet import frechet_distance_ci
from ldmkit.evaluation.metric_sets import disjoint_halves
from ldmkit.evaluation.run import EvalSettings, evaluate, parse_sweep
from ldmkit.evaluation.shapes_score import shapes_attribute_scores
from ldmkit.models.dual_encoder import load_dual_encoder

_spec = importlib.util.spec_from_file_location("eval_fixtures", Path(__file__).with_name("eval_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

N_BOOT = 100


# tiny models on a shared 2-core machine: threads only add contention (16 s -> 1 s per run)
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {"model": fx.tiny_model(root / "model", with_clip=True),
            "bare": fx.tiny_model(root / "bare", with_clip=False),
            "shapes": fx.shapes_data(root / "shapes"),
            "long": fx.long_caption_data(root / "long")}


@pytest.fixture(scope="module")
def swept(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "eval"
    settings = EvalSettings(model=world["model"], data=world["shapes"], out=out, n=4, seeds=(0, 1),
                            sweep=parse_sweep("guidance=1,3"), steps=1, best_of=2, n_boot=N_BOOT)
    return out, evaluate(settings)


def intervals(tree, key=""):
    """(key, interval) for every {"estimate", "low", "high"} dict anywhere in the metrics."""
    if isinstance(tree, dict):
        if {"estimate", "low", "high"} <= set(tree):
            yield key, tree
        else:
            for name, value in tree.items():
                yield from intervals(value, name)
    elif isinstance(tree, list):
        for value in tree:
            yield from intervals(value, key)


def test_metrics_json_has_every_metric_with_ordered_intervals(swept):
    out, metrics = swept
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert [c["label"] for c in metrics["conditions"]] == [
        "guidance=1.0", "guidance=1.0, best-of-2", "guidance=3.0", "guidance=3.0, best-of-2"]
    for condition in metrics["conditions"]:
        assert {"clip_score", "retrieval_top1", "retrieval_top5", "fd", "kid", "cmmd", "shapes"} <= set(condition["metrics"])
        assert len(condition["images"]) == 4 * 2 and all((out / r["file"]).is_file() for r in condition["images"])
        assert condition["settings"]["guidance"] == condition["sweep_value"]
        assert all(r["guidance"] == condition["sweep_value"] and r["steps"] == 1 for r in condition["images"])
    ref = metrics["reference"]
    assert {"fd", "kid", "cmmd"} <= set(ref["real_vs_real"]) and {"clip_score", "shapes"} <= set(ref["real_images"])
    found = list(intervals(metrics))
    assert len(found) > 40
    for key, ci in found:
        if ci["low"] <= ci["estimate"] <= ci["high"]:
            continue
        # FD's basic interval may miss its biased estimate at tiny sizes; frechet.py warns, and the note must say so
        assert key == "fd" and any("FrechetBiasWarning" in note for note in metrics["notes"]), (key, ci)
    # the tiny model has no training record: its references are centre crops without border trim
    assert metrics["data"]["reference_framing"] == {
        "fit": "crop", "focus": "centre", "trim": False,
        "source": "a centre crop (no training record in the model folder)"}
    env = metrics["environment"]
    assert env["model_hash"] and env["packages"]["torch"] and env["dual_encoder"]["weights_sha256"]
    assert metrics["settings"]["seeds"] == [0, 1] and metrics["settings"]["best_of"] == 2


def test_best_of_keeps_the_top_scored_candidate_of_its_own_seeds(swept):
    _, metrics = swept
    k = 2
    for condition in metrics["conditions"]:
        kept = {}
        for record in condition["images"]:
            if condition["best_of"] == 1:
                assert "rerank_scores" not in record
                continue
            scores = record["rerank_scores"]
            assert len(scores) == k and scores[int(np.argmax(scores))] == max(scores)
            # seed s draws candidates s*k .. s*k+k-1; the kept one is the argmax
            kept.setdefault(record["prompt_index"], []).append(record["seed"] - int(np.argmax(scores)))
        if condition["best_of"] == k:
            assert all(sorted(bases) == [0 * k, 1 * k] for bases in kept.values()) and len(kept) == 4


def test_shapes_attribute_accuracy_is_per_attribute_and_real_images_read_back(swept, world):
    _, metrics = swept
    columns = set(json.loads((world["shapes"] / "dataset_card.json").read_text())["label_columns"])
    real = metrics["reference"]["real_images"]["shapes"]
    assert set(real["per_attribute"]) == columns
    # mean over images of per-image means equals the mean over attributes (every image has every column)
    assert real["mean"]["estimate"] == pytest.approx(np.mean([v["estimate"] for v in real["per_attribute"].values()]))
    assert real["mean"]["estimate"] >= 0.9  # the reader on the real images: the ceiling of this score


def test_real_vs_real_floor_uses_two_disjoint_halves(swept, world):
    _, metrics = swept
    floor = metrics["reference"]["real_vs_real"]
    first, second = floor["halves"]
    held_out = CaptionDataset.open(world["shapes"]).split("test")
    assert not set(first) & set(second) and sorted(first + second) == list(range(len(held_out)))
    assert disjoint_halves(5)[0].tolist() == [0, 2, 4] and disjoint_halves(5)[1].tolist() == [1, 3]
    dual = load_dual_encoder(world["model"])
    emb = image_embeddings(dual, [held_out.image(i).resize((32, 32)) for i in range(len(held_out))])
    expected = frechet_distance_ci(emb[first], emb[second], n_boot=N_BOOT, seed=0)
    assert floor["fd"]["estimate"] == pytest.approx(expected.estimate)
    assert floor["sizes"] == [len(first), len(second)]


def test_long_captions_are_counted_not_silently_cut(world, tmp_path):
    metrics = evaluate(EvalSettings(model=world["model"], data=world["long"], out=tmp_path / "o", split="train",
                                    n=12, steps=1, n_boot=N_BOOT))
    in_split = metrics["data"]["prompts"]
    long = [p for p in in_split if p.count(" very") > 50]
    assert long, "the train split should hold some of the long captions"
    limits = metrics["text_limits"]
    assert limits["scorer_truncated"] == len(long) == limits["generator_truncated"]
    assert limits["scorer_max_tokens"] == 77 and set(limits["scorer_truncated_examples"]) == set(long)
    assert "shapes" not in metrics["conditions"][0]["metrics"]  # not a shapes dataset


def test_without_dual_encoder_embedding_metrics_are_skipped_with_a_note(world, tmp_path):
    metrics = evaluate(EvalSettings(model=world["bare"], data=world["shapes"], out=tmp_path / "o", n=3, steps=1,
                                    n_boot=N_BOOT))
    assert any("no dual encoder" in note for note in metrics["notes"])
    assert set(metrics["conditions"][0]["metrics"]) == {"shapes"}
    assert "real_vs_real" not in metrics["reference"] and (tmp_path / "o" / "report.html").is_file()


def test_asking_for_a_dual_encoder_that_is_missing_is_an_error(world, tmp_path):
    with pytest.raises(ModelFolderError, match="no clip/"):
        evaluate(EvalSettings(model=world["bare"], data=world["shapes"], out=tmp_path / "a", n=3, best_of=2))
    with pytest.raises(ModelFolderError, match="does not exist"):
        evaluate(EvalSettings(model=world["bare"], data=world["shapes"], out=tmp_path / "b", n=3,
                              clip=tmp_path / "nowhere"))


def test_seed_per_image_gives_every_caption_its_own_noise(world, tmp_path):
    shared = evaluate(EvalSettings(model=world["model"], data=world["shapes"], out=tmp_path / "shared", n=3,
                                   seeds=(0, 2), steps=1, n_boot=N_BOOT))
    own = evaluate(EvalSettings(model=world["model"], data=world["shapes"], out=tmp_path / "own", n=3, seeds=(0, 2),
                                steps=1, n_boot=N_BOOT, seed_per_image=True))
    assert [r["seed"] for r in shared["conditions"][0]["images"]] == [0, 2] * 3
    assert [r["seed"] for r in own["conditions"][0]["images"]] == [0, 6, 1, 7, 2, 8]  # seed * n + caption
    assert own["settings"]["seed_per_image"] is True and shared["settings"]["seed_per_image"] is False
    assert "noise per image" in (tmp_path / "own" / "report.html").read_text()
    assert "shared by every caption" in (tmp_path / "shared" / "report.html").read_text()
    first = [(tmp_path / name / r["file"]).read_bytes() for name, run in (("shared", shared), ("own", own))
             for r in run["conditions"][0]["images"][:1]]
    assert first[0] == first[1]  # caption 0, seed 0: the same noise either way
    with pytest.raises(UsageError, match="largest seed"):
        EvalSettings(model=world["model"], data=world["shapes"], out=tmp_path / "x", n=4, seeds=(2**63,),
                     seed_per_image=True)


def test_existing_output_is_never_overwritten(world, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="not empty"):
        evaluate(EvalSettings(model=world["model"], data=world["shapes"], out=out, n=3, steps=1))
    assert (out / "mine.txt").read_text() == "keep" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("text, message", [("cfg=1,2", "can sweep only"), ("guidance=", "expected NAME="),
                                           ("steps=2,x", "steps=2,x"), ("guidance=1,1", "distinct")])
def test_bad_sweeps_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        parse_sweep(text)


def test_sweep_values_take_the_settings_type():
    assert parse_sweep("steps=2, 4").values == (2, 4)
    assert parse_sweep("sampler=euler,ddim").values == ("euler", "ddim")


def test_cli_eval_prints_paths_and_refuses_best_of_without_clip(world, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["eval", str(world["model"]), "--data", str(world["shapes"]), "--n", "3", "--steps", "1",
               "--sweep", "sampler=euler,ddim", "--n-boot", "50", "--fit", "stretch", "--seed-per-image", "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and str(out / "metrics.json") in printed and "sampler=euler:" in printed
    written = json.loads((out / "metrics.json").read_text())
    assert [c["images"][0]["sampler"] for c in written["conditions"]] == ["euler", "ddim"]
    assert written["settings"]["seed_per_image"] and [r["seed"] for r in written["conditions"][0]["images"]] == [0, 1, 2]
    assert written["data"]["reference_framing"]["fit"] == "stretch" and "stretch" in (out / "report.html").read_text()
    rc = main(["eval", str(world["bare"]), "--data", str(world["shapes"]), "--best-of", "2", "-o", str(tmp_path / "x")])
    assert rc == 2 and "no clip/" in capsys.readouterr().err


def test_vae_round_trip_reference_scores_the_decoded_real_images(swept, world):
    """reference.vae_round_trip: the evaluated real images through encode -> decode, scored like generated ones
    (alignment and shapes attributes), and it is what vae_round_trip returns for those images."""
    from ldmkit.evaluation.run import vae_round_trip
    from ldmkit.pipeline import Pipeline

    _, metrics = swept
    trip = metrics["reference"]["vae_round_trip"]
    n = metrics["data"]["evaluated_images"]
    assert trip["images"] == n and {"clip_score", "retrieval_top1", "shapes"} <= set(trip)
    pipe = Pipeline.from_pretrained(world["model"])
    held_out = CaptionDataset.open(world["shapes"]).split("test")
    real = [held_out.image(i).convert("RGB").resize((32, 32)) for i in range(n)]
    decoded = vae_round_trip(pipe, real)
    assert [im.size for im in decoded] == [(32, 32)] * n
    assert any(np.asarray(a).tolist() != np.asarray(b).tolist() for a, b in zip(decoded, real))  # really decoded
    expected = shapes_attribute_scores(decoded, [dict(s.labels) for s in held_out.samples[:n]], n_boot=N_BOOT, seed=0)
    assert trip["shapes"]["mean"]["estimate"] == pytest.approx(expected["mean"]["estimate"])
