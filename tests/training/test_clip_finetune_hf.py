"""`ldmkit train clip --set clip.init_from=CLIPMODEL_FOLDER`: a real CLIP's two towers fine-tuned, the ORIGINAL
model's held-out retrieval as "before" (checked against transformers), the table at the end, the result in the
CLIPModel layout; `ldmkit eval --clip` / `--best-of` with such folders; keys that would have no effect refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ldmkit.cli import main
from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.recipes import ClipRecipe, UNetRecipe, VAERecipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
_spec = importlib.util.spec_from_file_location(
    "hf_clip_fixtures", Path(__file__).resolve().parents[1] / "models" / "hf_clip_fixtures.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


def _settings(tmp: Path, clip: Path, *extra: str) -> list[str]:
    return [f"clip.init_from={clip}", "data.builtin=shapes", "data.builtin_n=48", f"data.path={tmp / 'data'}",
            "data.image_size=32", "data.val_fraction=0.3", "data.test_fraction=0", "clip.eval_split=val",
            "train.batch_size=16", "train.lr=0.002", "train.warmup_steps=0", "train.weight_decay=0",
            "train.checkpoint_every=0", "train.log_every=1", "train.progress_bar=false", *extra]


def _reference_recall(folder: Path, dataset, trim):
    """Held-out recall of the CLIPModel in `folder` computed with transformers alone (no ldmkit model code), on the
    images framed as the recipe's data.trim frames them."""
    from transformers import CLIPModel, CLIPTokenizer

    from ldmkit.models.hf_clip import OPENAI_MEAN, OPENAI_STD
    from ldmkit.training.clip_task import retrieval_recall
    from ldmkit.training.run_data import load_pixels

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    captions = [c for s in dataset.samples for c in s.captions]
    tok = CLIPTokenizer.from_pretrained(folder)(captions, padding="max_length", max_length=77, return_tensors="pt")
    pixels = (load_pixels(dataset, 32, trim) + 1) / 2
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=(pixels - mean) / std)
    owner = torch.tensor([i for i, s in enumerate(dataset.samples) for _ in s.captions])
    return retrieval_recall(out.image_embeds, out.text_embeds, owner)


@pytest.mark.slow
def test_finetuning_a_clip_model_reports_original_vs_finetuned(tmp_path, capsys):
    from transformers import CLIPModel

    from ldmkit.training.clip_task import ClipTask

    torch.set_num_threads(1)
    clip = fixtures.tiny_clip_folder(tmp_path / "clip")
    settings = _settings(tmp_path, clip, "train.steps=30", "clip.tune_last_layers=1")
    assert main(["train", "clip", "--config", str(CONFIGS / "clip-finetune.yaml"), "--out", str(tmp_path / "run"),
                 *[a for s in settings for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "text->image R@10" in err and "image->text R@1 " in err and "%" in err  # the table, on the terminal

    report = json.loads((tmp_path / "run" / "clip_report.json").read_text())
    # "before" is the ORIGINAL CLIPModel on the same held-out split, as transformers itself scores it
    task = ClipTask(load_recipe(CONFIGS / "clip-finetune.yaml", ClipRecipe, settings), tmp_path / "probe")
    reference = _reference_recall(clip, task.held_out, task.recipe.data.trim)
    assert report["before"] == pytest.approx(reference, abs=1e-9)
    assert report["images"] == len(task.held_out) and report["captions"] == 3 * len(task.held_out)
    for key, row in report["comparison"].items():
        for name in ("before", "after", "change"):
            estimate, low, high = row[name]
            assert low <= estimate <= high
        assert row["before"][0] == pytest.approx(report["before"][key])
        assert row["after"][0] == pytest.approx(report["after"][key])
        assert row["change"][0] == pytest.approx(row["after"][0] - row["before"][0])
    assert set(report["comparison"]) == {f"{d}_r@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}

    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert sum(losses[-6:]) / 6 < 0.9 * sum(losses[:6]) / 6  # it learns

    # the result is a CLIPModel folder; only the last layer of each tower (and the heads) moved
    original = CLIPModel.from_pretrained(clip, local_files_only=True).state_dict()
    tuned = CLIPModel.from_pretrained(tmp_path / "run" / "final" / "clip", local_files_only=True).state_dict()
    assert tuned.keys() == original.keys()
    moved = {k for k in original if not torch.equal(original[k], tuned[k])}
    assert "text_projection.weight" in moved and "visual_projection.weight" in moved and "logit_scale" in moved
    assert any(k.startswith("text_model.encoder.layers.1.") for k in moved)
    assert any(k.startswith("vision_model.encoder.layers.1.") for k in moved)
    assert not any(".layers.0." in k or "embeddings" in k for k in moved)
    meta = json.loads((tmp_path / "run" / "final" / "ldmkit.json").read_text())
    assert meta["clip_start"] == str(clip) and meta["clip_metrics"]["comparison"] == report["comparison"]


@pytest.mark.slow
def test_eval_clip_and_best_of_take_a_clip_model_and_the_finetuned_run(tmp_path):
    from ldmkit.data.builtin import build_dataset
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components
    from ldmkit.training.trainers import train_task

    torch.set_num_threads(1)
    clip = fixtures.tiny_clip_folder(tmp_path / "clip")
    recipe = load_recipe(CONFIGS / "clip-finetune.yaml", ClipRecipe, _settings(tmp_path, clip, "train.steps=2"))
    run = train_task("clip", recipe, tmp_path / "run")
    model, tokenizer = fixtures.tiny_clip_model(seed=5)
    model.text_model.save_pretrained(tmp_path / "sd-text")
    tokenizer.save_pretrained(tmp_path / "sd-text")
    save_components(build_components("tiny", seed=0, text_encoder=str(tmp_path / "sd-text")), tmp_path / "sd")
    build_dataset("shapes", tmp_path / "shapes", n=60, seed=1, size=32)
    for scorer, out in ((clip, "eval-original"), (tmp_path / "run", "eval-finetuned")):
        assert main(["eval", str(tmp_path / "sd"), "--data", str(tmp_path / "shapes"), "--clip", str(scorer),
                     "--n", "2", "--steps", "1", "--best-of", "2", "--n-boot", "50", "-o", str(tmp_path / out)]) == 0
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        assert {c["best_of"] for c in metrics["conditions"]} == {1, 2}
        assert all("clip_score" in c["metrics"] for c in metrics["conditions"])
    assert run.final_dir == tmp_path / "run" / "final"
    dual = lambda name: json.loads((tmp_path / name / "metrics.json").read_text())["environment"]["dual_encoder"]
    assert dual("eval-original")["weights_sha256"] != dual("eval-finetuned")["weights_sha256"]


def test_keys_that_would_have_no_effect_are_refused_at_config_time():
    with pytest.raises(UsageError, match="model.text_encoder .* has no effect with model.init_from"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["model.init_from=some/model", "model.text_encoder=minilm"])
    with pytest.raises(UsageError, match="clip.tune_image: false needs clip.init_from"):
        load_recipe(CONFIGS / "clip-shapes.yaml", ClipRecipe, ["clip.tune_image=false"])
    with pytest.raises(UsageError, match="clip.tune_last_layers has no effect without clip.init_from"):
        load_recipe(CONFIGS / "clip-shapes.yaml", ClipRecipe, ["clip.tune_last_layers=2"])
    with pytest.raises(UsageError, match="min_lr_ratio .* has no effect with lr_schedule 'constant'"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["train.lr_schedule=constant", "train.min_lr_ratio=0.1"])
    with pytest.raises(UsageError, match="unet.eval_prompts .* has no effect without unet.eval_clip"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.eval_prompts=8"])
    with pytest.raises(UsageError, match="vae.disc_weight .* has no effect while vae.disc_start is 0"):
        load_recipe(CONFIGS / "vae-shapes.yaml", VAERecipe, ["vae.disc_weight=0.5"])
    # every shipped recipe still loads (none sets such a combination)
    for name in ("tiny", "shapes-32", "default-unet", "default-unet-finetune", "emoji-64", "avatars-64"):
        load_recipe(CONFIGS / f"{name}.yaml", UNetRecipe)
    load_recipe(CONFIGS / "default-unet-finetune.yaml", UNetRecipe, ["model.init_from=some/model"])
    for name in ("clip-shapes", "default-clip", "clip-finetune"):
        load_recipe(CONFIGS / f"{name}.yaml", ClipRecipe, ["data.path=x"])


def test_a_clip_model_start_refuses_unused_keys_and_too_many_layers_before_training(tmp_path):
    from ldmkit.training.clip_task import ClipTask

    torch.set_num_threads(1)
    clip = fixtures.tiny_clip_folder(tmp_path / "clip")
    for extra, message in ((["model.text_encoder=minilm"], r"model.text_encoder has no effect: clip.init_from"),
                           (["clip.embed_dim=32"], r"clip.embed_dim has no effect"),
                           (["clip.tune_last_layers=3"], r"3 is more than the text tower's 2 layers")):
        with pytest.raises(UsageError, match=message):
            ClipTask(load_recipe(CONFIGS / "clip-finetune.yaml", ClipRecipe, _settings(tmp_path, clip, *extra)),
                     tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_comparison_is_paired_and_states_the_relative_change():
    import numpy as np

    from ldmkit.training.clip_report import compare, format_table

    before = {"i2t_r@1": np.array([1, 0, 0, 0, 1, 0, 0, 0], bool), "t2i_r@1": np.zeros(8, bool)}
    after = {"i2t_r@1": np.array([1, 1, 0, 0, 1, 1, 0, 1], bool), "t2i_r@1": np.array([1, 0, 0, 0, 0, 0, 0, 0], bool)}
    rows = compare(before, after, n_boot=200)
    assert rows["i2t_r@1"]["relative"] == pytest.approx(1.5)  # 0.25 -> 0.625
    assert rows["t2i_r@1"]["relative"] is None  # from 0: no relative change
    # paired: every item either stayed or improved, so no resample can show a drop
    assert rows["i2t_r@1"]["change"][1] >= 0 and rows["i2t_r@1"]["change"][0] == pytest.approx(0.375)
    table = format_table({"split": "test", "images": 8, "captions": 8, "start": "x", "comparison": rows,
                          "before": {"i2t_r@1_chance": 0.125}})
    assert "+150%" in table and "n/a (from 0)" in table and "0.125" in table
