"""The CLIP dual-encoder trainer: InfoNCE and retrieval against closed forms, a short run, save/load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.errors import ModelFolderError
from ldmkit.models.dual_encoder import MAX_LOGIT_SCALE, load_dual_encoder
from ldmkit.training.clip_task import ClipTask, info_nce, retrieval_recall
from ldmkit.training.recipes import ClipRecipe
from ldmkit.training.trainers import train_task

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "clip-shapes.yaml"


def test_info_nce_closed_form():
    n, s = 5, 3.0
    emb = torch.eye(n, 8)
    expected = -math.log(math.exp(s) / (math.exp(s) + (n - 1)))  # positives cos 1, negatives cos 0
    assert float(info_nce(emb, emb, torch.tensor(s))) == pytest.approx(expected, rel=1e-6)
    # symmetric: swapping the towers gives the same loss
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    assert float(info_nce(a, b, torch.tensor(2.0))) == pytest.approx(float(info_nce(b, a, torch.tensor(2.0))))


def test_retrieval_with_several_captions_per_image():
    images = torch.eye(3, 3)
    # image 0 has captions 0,1; image 1 has 2; image 2 has 3,4. Caption 1 points at image 2 (wrong).
    owner = torch.tensor([0, 0, 1, 2, 2])
    texts = torch.stack([images[0], images[2], images[1], images[2], images[2]]) + 0.01 * torch.arange(5)[:, None]
    r = retrieval_recall(images, texts, owner, ks=(1,))
    assert r["t2i_r@1"] == pytest.approx(4 / 5)  # caption 1 misses
    # image->text counts a hit when ANY caption of the image comes first: image 2's top caption is
    # caption 4 (its own), although caption 1 (image 0's) is also closest to image 2
    assert r["i2t_r@1"] == pytest.approx(1.0)
    assert r["t2i_r@1_chance"] == pytest.approx(1 / 3)
    # chance of i2t@1 = mean over images of (own captions / all captions)
    assert r["i2t_r@1_chance"] == pytest.approx((2 / 5 + 1 / 5 + 2 / 5) / 3)


def test_chance_level_matches_random_embeddings_on_average():
    g = torch.Generator().manual_seed(0)
    owner = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4])
    hits = []
    for _ in range(300):
        r = retrieval_recall(torch.randn(5, 16, generator=g), torch.randn(10, 16, generator=g), owner, ks=(2,))
        hits.append(r["i2t_r@2"])
    assert sum(hits) / len(hits) == pytest.approx(r["i2t_r@2_chance"], abs=0.05)


def test_clip_run_learns_beats_chance_and_reloads(tmp_path):
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE, ClipRecipe, [
        "data.builtin_n=64", "train.steps=40", "train.batch_size=16", "train.warmup_steps=0", "train.log_every=1",
        "train.checkpoint_every=0", "train.validate_every=0", "train.progress_bar=false",
    ])
    result = train_task("clip", recipe, tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert sum(losses[-8:]) / 8 < 0.85 * sum(losses[:8]) / 8
    report = json.loads((tmp_path / "run" / "clip_report.json").read_text())
    train = report["train_after"]
    assert train["i2t_r@1"] > 3 * train["i2t_r@1_chance"] and train["t2i_r@1"] > 3 * train["t2i_r@1_chance"]
    assert set(report) >= {"before", "after"} and report["images"] > 0

    model = load_dual_encoder(result.final_dir)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    emb = model.encode_images(pixels)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    text = model.encode_texts(["a red square", "a blue circle on the left"])
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert float(model.temperature_scale()) <= MAX_LOGIT_SCALE
    # the saved model is the trained one: embeddings equal a fresh task's model after loading its weights
    task = ClipTask(recipe, tmp_path / "run")
    task.model.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(task.model.encode_texts(["a red square"]), model.encode_texts(["a red square"]))
    # the model folder still loads as a generation model
    from ldmkit.models.folder import load_components

    assert load_components(result.final_dir).meta["trainer"] == "clip"


def test_logit_scale_is_clamped():
    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig
    from ldmkit.models.presets import build_text_encoder, get_preset

    text = build_text_encoder(get_preset("tiny"), None, seed=0)
    model = DualEncoder(DualEncoderConfig(text_hidden=text.hidden_size, init_temperature=0.001), text)
    assert float(model.temperature_scale().detach()) == pytest.approx(MAX_LOGIT_SCALE)


def test_missing_dual_encoder_is_reported(tmp_path):
    with pytest.raises(ModelFolderError, match="no dual encoder"):
        load_dual_encoder(tmp_path)


def test_tuned_text_tower_is_saved_and_reloaded(tmp_path):
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE, ClipRecipe, [
        "data.builtin_n=16", "train.steps=3", "train.batch_size=8", "train.checkpoint_every=0",
        "train.progress_bar=false", "clip.tune_text=true", "train.lr=0.01",
    ])
    from ldmkit.models.presets import build_text_encoder, get_preset

    result = train_task("clip", recipe, tmp_path / "run")
    assert (result.final_dir / "clip" / "text_encoder").is_dir()
    model = load_dual_encoder(result.final_dir)
    initial = build_text_encoder(get_preset("tiny"), None, seed=2).model.state_dict()
    tuned = model.text_encoder.model.state_dict()
    assert any(not torch.equal(initial[k], tuned[k]) for k in initial)
    # the generation model's own text encoder is left as it was
    from ldmkit.models.folder import load_components

    frozen = load_components(result.final_dir).text_encoder.model.state_dict()
    assert all(torch.equal(initial[k], frozen[k]) for k in initial)


def test_fine_tuning_starts_from_the_earlier_dual_encoder(tmp_path):
    """clip.init_from: the fine-tune's `before` is the first run's `after` on the same held-out split."""
    torch.set_num_threads(1)
    common = ["data.builtin_n=48", "train.batch_size=16", "train.warmup_steps=0", "train.checkpoint_every=0",
              "train.validate_every=0", "train.progress_bar=false", f"data.path={tmp_path / 'data'}"]
    first = train_task("clip", load_recipe(RECIPE, ClipRecipe, common + ["train.steps=12"]), tmp_path / "a")
    tuned = train_task("clip", load_recipe(RECIPE, ClipRecipe, common + ["train.steps=3", "train.lr=0.01",
                                                                             f"clip.init_from={first.final_dir}"]),
                       tmp_path / "b")
    a = json.loads((tmp_path / "a" / "clip_report.json").read_text())
    b = json.loads((tmp_path / "b" / "clip_report.json").read_text())
    assert b["before"] == a["after"]
    assert a["after"] != a["before"]  # so a fresh start (the random encoder) could not pass the line above
    w_a = load_dual_encoder(first.final_dir).state_dict()
    w_b = load_dual_encoder(tuned.final_dir).state_dict()
    assert any(not torch.equal(w_a[k], w_b[k]) for k in w_a)  # and it did train further


def test_a_clip_folder_without_its_text_encoder_is_refused_clearly(tmp_path):
    import shutil

    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE, ClipRecipe, ["data.builtin_n=16", "train.steps=1", "train.batch_size=8",
                                              "train.checkpoint_every=0", "train.validate_every=0",
                                              "train.progress_bar=false"])
    result = train_task("clip", recipe, tmp_path / "run")
    shutil.copytree(result.final_dir / "clip", tmp_path / "alone" / "clip")
    with pytest.raises(ModelFolderError, match="no text_encoder/"):
        load_dual_encoder(tmp_path / "alone")


def test_the_train_split_report_reuses_the_cached_pixels_and_text_states(tmp_path):
    """save_final's train-split retrieval projects the frozen tower's cached states instead of running the text
    encoder over every caption again: the same recall either way."""
    torch.set_num_threads(1)
    task = ClipTask(load_recipe(RECIPE, ClipRecipe, ["data.builtin_n=48", "train.progress_bar=false"]), tmp_path / "r")
    assert task.pooled is not None  # the recipe's text tower is frozen
    fresh_scores, fresh_hits = task.evaluate_hits(task.train)
    cached_scores, cached_hits = task.evaluate_hits(task.train, pixels=task.train_pixels, pooled=task.pooled)
    assert cached_scores == pytest.approx(fresh_scores, abs=1e-9)
    assert {k: v.tolist() for k, v in cached_hits.items()} == {k: v.tolist() for k, v in fresh_hits.items()}
