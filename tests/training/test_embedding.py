"""`ldmkit train embedding`: textual inversion through the shared loop; only the new vectors change (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ldmkit.config.recipe import apply_overrides, from_dict, read_yaml_mapping
from ldmkit.errors import UsageError
from ldmkit.models.embeddings import init_vectors, read_embedding
from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline
from ldmkit.training.recipes import EmbeddingRecipe
from ldmkit.training.embedding_task import EmbeddingTask
from ldmkit.training.loop import train
from ldmkit.training.trainers import run_trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "embedding-tiny.yaml"
FAST = ["train.steps=4", "train.batch_size=4", "train.checkpoint_every=2", "train.progress_bar=false",
        "data.builtin_n=16", "train.log_every=1", "train.warmup_steps=0", "train.lr=0.05",
        "train.lr_schedule=constant"]  # a schedule that does not depend on train.steps: the resume test stops early
TOKEN_FILE = "zxq.safetensors"


def recipe(*overrides: str) -> EmbeddingRecipe:
    return from_dict(EmbeddingRecipe, apply_overrides(EmbeddingRecipe, read_yaml_mapping(CONFIG), [*FAST, *overrides]),
                     source=str(CONFIG))


def trained_task(run: Path, *overrides: str) -> EmbeddingTask:
    r = recipe(*overrides)
    task = EmbeddingTask(r, run)
    train(task, r.train, run, recipe=r)
    return task


def assert_base_unchanged(task: EmbeddingTask, base) -> None:
    """Every UNet / VAE / text encoder weight bit-identical to the untouched model; the token rows are new."""
    c = task.components
    for trained, fresh in ((c.unet, base.unet), (c.vae, base.vae)):
        ref = fresh.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in trained.state_dict().items())
    table = c.text_encoder.model.get_input_embeddings().weight
    ref_table = base.text_encoder.model.get_input_embeddings().weight
    assert table.shape[0] == ref_table.shape[0] + task.recipe.embedding.num_vectors
    assert torch.equal(table[: ref_table.shape[0]], ref_table)
    ref = base.text_encoder.model.state_dict()
    others = {k: v for k, v in c.text_encoder.model.state_dict().items() if v.shape == ref[k].shape}
    assert len(others) == len(ref) - 1 and all(torch.equal(v, ref[k]) for k, v in others.items())


@pytest.mark.slow
def test_clip_embedding_trains_only_its_vectors_and_writes_an_a1111_file(tmp_path):
    run = tmp_path / "run"
    task = trained_task(run)
    base = build_components("tiny", seed=0)
    assert_base_unchanged(task, base)
    with safe_open(str(run / "final" / TOKEN_FILE), framework="pt") as f:  # the A1111/kohya layout, nothing else
        assert list(f.keys()) == ["emb_params"] and f.get_slice("emb_params").get_shape() == [2, 32]
        meta = f.metadata()
    assert meta["ldmkit_token"] == "<zxq>" and meta["ldmkit_init_word"] == "shape" and meta["ldmkit_text_encoder"] == "clip"
    emb = read_embedding(run / "final" / TOKEN_FILE)
    start = init_vectors(base.text_encoder, "shape", 2)
    assert (emb.vectors - start).abs().max() > 1e-3  # trained away from the init word
    assert read_embedding(run / "checkpoints" / "step-00000004" / "model" / TOKEN_FILE).vectors.shape == (2, 32)
    # the file drives generation: the token's image differs from the init word's, which it started as
    pipe = Pipeline(build_components("tiny", seed=0))
    assert pipe.load_embedding(run / "final" / TOKEN_FILE) == "<zxq>"
    a, b = (pipe(p, steps=3, seed=1).latents for p in ("a photo of <zxq>", "a photo of shape shape"))
    assert (a - b).abs().max() > 0


@pytest.mark.slow
def test_a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    run_trainer("embedding", CONFIG, straight, FAST)
    run_trainer("embedding", CONFIG, resumed, [*FAST, "train.steps=2"])
    run_trainer("embedding", CONFIG, resumed, FAST)  # continues from step 2's checkpoint
    a, b = (read_embedding(run / "final" / TOKEN_FILE).vectors for run in (straight, resumed))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_minilm_embedding_trains_on_the_packaged_text_encoder(tmp_path):
    task = trained_task(tmp_path / "run", "model.text_encoder=minilm", "train.steps=2", "embedding.num_vectors=1")
    assert_base_unchanged(task, build_components("tiny", seed=0, text_encoder="minilm"))
    emb = read_embedding(tmp_path / "run" / "final" / TOKEN_FILE)
    assert emb.vectors.shape == (1, 384) and emb.metadata["ldmkit_text_encoder"] == "minilm"


@pytest.mark.parametrize("override, message", [
    ("embedding.token=two words", "embedding.token"),
    ("embedding.num_vectors=17", "embedding.num_vectors"),
    ("embedding.templates=[a photo]", "embedding.templates"),
    ("unet.caption_dropout=0.1", "caption_dropout"),
    ("embedding.init_word=''", "embedding.init_word"),
])
def test_recipe_is_checked(override, message):
    with pytest.raises(UsageError, match=message):
        run_trainer("embedding", CONFIG, "/nonexistent/run", [override])


def test_a_token_the_tokenizer_has_is_refused_before_training(tmp_path):
    with pytest.raises(UsageError, match="already in the tokenizer's vocabulary"):
        run_trainer("embedding", CONFIG, tmp_path / "run", [*FAST, "embedding.token=photo"])
