"""The small evaluation inside UNet training: CLIP score / prompt retrieval by hand, eval.jsonl per validation."""

import json
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.training.recipes import ClipRecipe, UNetRecipe
from ldmkit.training.run_eval import append_eval_row, evaluate_alignment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class StubDualEncoder:
    """Embeddings chosen by hand: image i points at caption perm[i]; cosine of own pairs known."""

    def __init__(self, image_emb, text_emb):
        self.image_emb, self.text_emb = image_emb, text_emb

    def encode_images(self, pixels):
        assert pixels.shape[0] == len(self.image_emb) and pixels.min() >= -1 and pixels.max() <= 1
        return self.image_emb

    def encode_texts(self, texts):
        return self.text_emb[: len(texts)]


def test_alignment_metrics_by_hand():
    from ldmkit.models.presets import build_components

    torch.manual_seed(0)
    components = build_components("tiny", seed=0)
    text = torch.eye(6, 8)
    # image 0 -> its own caption (cos 1); image 1 -> caption 2 first, own second (cos 0.6 vs 0.8);
    # image 2 -> own caption at cos -0.5 (clipped to 0 in the score), ranked last
    image = torch.zeros(6, 8)
    image[0, 0] = 1.0
    image[1, 1], image[1, 2] = 0.6, 0.8
    image[2, 2] = -0.5
    for i in range(3, 6):
        image[i, i] = 0.5
    row = evaluate_alignment(components, StubDualEncoder(image, text), [f"caption {i}" for i in range(6)], steps=1)
    assert row["clip_score"] == pytest.approx(100 * (1 + 0.6 + 0 + 0.5 * 3) / 6)
    assert row["retrieval_top1"] == pytest.approx(4 / 6)  # images 0, 3, 4, 5
    assert row["retrieval_top5"] == pytest.approx(5 / 6)  # image 2's own caption is 6th of 6
    assert row["prompts"] == 6


def test_rows_keep_one_per_step_after_a_resume(tmp_path):
    for step in (2, 4, 6):
        append_eval_row(tmp_path, step, {"clip_score": step, "retrieval_top1": 0.1, "retrieval_top5": 0.2, "prompts": 4})
    append_eval_row(tmp_path, 4, {"clip_score": 40, "retrieval_top1": 0.1, "retrieval_top5": 0.2, "prompts": 4})
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["clip_score"]) for r in rows] == [(2, 2), (4, 40)]


@pytest.mark.slow
def test_unet_training_logs_the_evaluation_at_each_validation(tmp_path):
    from ldmkit.training.trainers import train_task
    from ldmkit.training.trainers import train_task

    torch.set_num_threads(1)
    clip = train_task("clip", load_recipe(CONFIGS / "clip-shapes.yaml", ClipRecipe, [
        "data.builtin_n=16", "train.steps=2", "train.batch_size=8", "train.checkpoint_every=0",
        "train.validate_every=0", "train.progress_bar=false"]), tmp_path / "clip")
    recipe = load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, [
        "train.steps=4", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "data.builtin_n=16", "data.val_fraction=0.4", "train.validate_every=2", "unet.validation_steps=2", "unet.eval_prompts=4",
        f"unet.eval_clip={clip.final_dir}"])
    train_task("unet", recipe, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["retrieval_top1"] <= r["retrieval_top5"] <= 1 and r["prompts"] == 4 for r in rows)
    assert (tmp_path / "run" / "eval_curve.png").is_file()
    # the rows travel in the model folder and `ldmkit eval` reports them
    record = json.loads((tmp_path / "run" / "final" / "ldmkit.json").read_text())
    assert [r["step"] for r in record["training_eval"]] == [2, 4]
    from ldmkit.evaluation.run import EvalSettings, evaluate

    metrics = evaluate(EvalSettings(model=tmp_path / "run" / "final", data=tmp_path / "run" / "dataset",
                                    out=tmp_path / "eval", split="val", n=3, seeds=(0,), clip=clip.final_dir,
                                    steps=2, n_boot=20))
    assert metrics["training_eval"] == record["training_eval"]
    assert "Evaluation during training" in (tmp_path / "eval" / "report.html").read_text()


def test_retrieval_ranks_among_distinct_captions_and_ties_count_against_the_image():
    """The same rule as `ldmkit eval` (ldmkit.metrics.retrieval): a repeated caption is one candidate, and an
    image exactly between its own caption and another ranks second, not first."""
    from ldmkit.models.presets import build_components

    torch.manual_seed(0)
    components = build_components("tiny", seed=0)
    text = torch.eye(2, 4)  # the distinct captions "a", "b"
    image = torch.zeros(3, 4)
    image[0, 0] = 1.0  # own caption "a": first
    image[1, 0] = image[1, 1] = 2 ** -0.5  # own caption "a" tied with "b": second
    image[2, 1] = 1.0  # own caption "b": first
    row = evaluate_alignment(components, StubDualEncoder(image, text), ["a", "a", "b"], steps=1)
    assert row["retrieval_top1"] == pytest.approx(2 / 3)
    assert row["retrieval_top5"] == 1.0
    assert row["prompts"] == 3
