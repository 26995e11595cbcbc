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


class StubClassifier:
    """Reads back the guesses it is given, with the per-attribute accuracies of a trained one."""

    def __init__(self, accuracy, guesses):
        from types import SimpleNamespace

        self.config, self.guesses = SimpleNamespace(accuracy=accuracy), guesses

    def predict_images(self, images):
        assert len(images) == len(self.guesses)
        return self.guesses


def test_attribute_accuracy_by_hand():
    """Avatars only (an emoji row is not scored), the attributes each caption names, minus those the classifier
    reads below 95% (eyebrows here); the mean over images of each image's share."""
    from ldmkit.data.builtin.avatars import captions_for
    from ldmkit.training.run_eval import avatars_attribute_row

    face = {"top": "bob", "hair_color": "red", "hat_color": "none", "skin": "pale", "eyes": "wink",
            "eyebrows": "angry", "mouth": "smile", "facial_hair": "none", "accessory": "sunglasses",
            "clothing": "hoodie", "clothing_color": "blue_01", "background": "pink"}
    caption = captions_for(face)[0]  # names top, hair colour, accessory, eyebrows, mouth
    right = {"top": "bob", "hair_color": "red", "accessory": "sunglasses", "eyebrows": "sad", "mouth": "smile"}
    accuracy = {"top": 0.99, "hair_color": 0.99, "accessory": 0.99, "eyebrows": 0.5, "mouth": 0.99}
    classifier = StubClassifier(accuracy, [right, {**right, "hair_color": "black"}])
    row = avatars_attribute_row(classifier, ["img0", "emoji", "img1"], [caption, "red heart", caption],
                             [face, {"source": "emoji", "name": "red heart"}, face])
    assert row == {"attribute_accuracy": pytest.approx((4 / 4 + 3 / 4) / 2), "attribute_images": 2}
    assert avatars_attribute_row(classifier, ["emoji"], ["red heart"], [{"source": "emoji"}]) == {}
    unsure = StubClassifier({name: 0.9 for name in accuracy}, [right])  # reads nothing reliably
    assert avatars_attribute_row(unsure, ["img0"], [caption], [face]) == {"attribute_images": 0}


def test_eval_rows_carry_the_samples_and_wall_time_of_their_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 2, "loss": 1.0, "samples": 16, "elapsed_s": 3.5}\n'
        '{"step": 2, "event": "nonfinite_skip"}\n'
        '{"step": 4, "loss": 0.9, "samples": 32, "elapsed_s": 7.25}\n')
    for step in (2, 4, 6):  # step 6 has no metrics row (an old run folder): the row stays as it was
        append_eval_row(tmp_path, step, {"clip_score": 1.0, "retrieval_top1": 0.1, "retrieval_top5": 0.2, "prompts": 4})
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("samples"), r.get("elapsed_s")) for r in rows] == [(2, 16, 3.5), (4, 32, 7.25),
                                                                               (6, None, None)]


def test_progress_rows_count_samples_and_wall_time_across_a_resume(tmp_path, monkeypatch):
    """elapsed_s is the training loop's wall time summed over attempts: a resumed run continues from the last
    row it keeps (the rows past its checkpoint are dropped), not from zero."""
    from ldmkit.training import progress

    clock = iter(float(t) for t in range(0, 1000, 10))  # every call 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))

    def attempt(start, stop):
        log = progress.ProgressLog(tmp_path, total_steps=6, start_step=start, samples_per_step=8, log_every=2,
                                   enabled=True, show_bar=False)
        for step in range(start + 1, stop + 1):
            log.update(step, {"loss": 1.0})
        log.flush(stop)

    attempt(0, 4)  # a crash after step 4; its checkpoint was at step 2
    first = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    attempt(2, 6)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["samples"]) for r in rows] == [(2, 16), (4, 32), (6, 48)]
    assert rows[0] == first[0] and 0 < first[0]["elapsed_s"] < first[1]["elapsed_s"]
    assert rows[0]["elapsed_s"] < rows[1]["elapsed_s"] < rows[2]["elapsed_s"]
    assert rows[1]["elapsed_s"] - rows[0]["elapsed_s"] == first[1]["elapsed_s"] - first[0]["elapsed_s"]


def test_spread_takes_every_source_of_a_sorted_split():
    from ldmkit.training.unet import spread

    split = ["avatars"] * 6 + ["emoji"] * 4
    assert spread(split, 5) == ["avatars", "avatars", "avatars", "emoji", "emoji"]
    assert spread(split, 20) == split


def test_eval_attributes_needs_the_in_training_evaluation():
    from ldmkit.errors import UsageError

    with pytest.raises(UsageError, match="unet.eval_attributes has no effect without unet.eval_clip"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.eval_attributes=somewhere"])
    recipe = load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.eval_clip=a", "unet.eval_attributes=b",
                                                             "train.validate_every=5"])
    assert recipe.unet.eval_attributes == "b"


def test_eval_clip_needs_validations():
    from ldmkit.errors import UsageError

    with pytest.raises(UsageError, match="unet.eval_clip \\(a\\) has no effect with train.validate_every 0"):
        load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["unet.eval_clip=a", "train.validate_every=0"])
