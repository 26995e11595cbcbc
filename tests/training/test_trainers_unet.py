"""The UNet trainer: objective pieces against diffusers' references, caption dropout, end-to-end runs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.errors import UsageError
from ldmkit.training.objective import min_snr_weights, q_sample, snr, velocity
from ldmkit.training.recipes import UNetRecipe, UNetSection
from ldmkit.training.trainers import train_task
from ldmkit.training.unet import UNetTask

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
FAST = ["train.steps=3", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "data.builtin_n=16", "train.log_every=1"]


def _recipe(*overrides: str) -> UNetRecipe:
    return load_recipe(TINY, UNetRecipe, [*FAST, *overrides])


def _ddpm():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_q_sample_and_velocity_match_diffusers():
    sched = _ddpm()
    ab = NoiseSchedule().alphas_cumprod()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(q_sample(x0, noise, t, ab), sched.add_noise(x0, noise, t))
    torch.testing.assert_close(velocity(x0, noise, t, ab), sched.get_velocity(x0, noise, t))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_closed_form(prediction_type):
    from diffusers.training_utils import compute_snr

    sched = _ddpm()
    ab = NoiseSchedule().alphas_cumprod()
    t = torch.arange(0, 1000, 37)
    reference_snr = compute_snr(sched, t)
    torch.testing.assert_close(snr(t, ab), reference_snr)
    gamma = 5.0
    w = min_snr_weights(t, ab, gamma, prediction_type)
    # Hang et al. 2023: the weight on the x0 error is min(SNR, gamma). An eps error is the x0 error x SNR,
    # a v error the x0 error x (SNR + 1): dividing gives the weight of each loss.
    scale = reference_snr if prediction_type == "epsilon" else reference_snr + 1
    torch.testing.assert_close(w, torch.minimum(reference_snr, torch.full_like(reference_snr, gamma)) / scale)
    assert torch.all(w <= 1.0 + 1e-6)
    assert torch.equal(min_snr_weights(t, ab, 0.0, prediction_type), torch.ones(len(t)))


def test_zero_terminal_snr_needs_v_prediction():
    with pytest.raises(UsageError, match="v_prediction"):
        UNetSection(zero_terminal_snr=True)


@pytest.fixture(scope="module")
def dropout_task(tmp_path_factory):
    torch.set_num_threads(1)
    recipe = _recipe("unet.caption_dropout=0.3")
    return UNetTask(recipe, tmp_path_factory.mktemp("dropout"))


def test_caption_dropout_rate_and_empty_prompt_state(dropout_task):
    task, g = dropout_task, torch.Generator().manual_seed(0)
    n, dropped, seen_captions = 0, 0, set()
    for _ in range(150):
        ids = torch.randint(0, task.num_samples(), (8,), generator=g).tolist()
        batch = task.batch(ids, g)
        is_null = (batch["text"] == task.null_text).flatten(1).all(1)
        assert torch.equal(is_null, batch["dropped"])  # dropped rows hold exactly the empty-prompt state
        n, dropped = n + len(ids), dropped + int(is_null.sum())
        seen_captions.update((i, round(float(row.sum()), 3)) for i, row, d in zip(ids, batch["text"], is_null) if not d)
    rate, sigma = dropped / n, math.sqrt(0.3 * 0.7 / n)
    assert abs(rate - 0.3) < 4 * sigma, f"dropout rate {rate:.3f} over {n} rows"
    # the caption is drawn among all of an image's captions (shapes images have 3)
    per_image = {}
    for i, key in seen_captions:
        per_image.setdefault(i, set()).add(key)
    assert max(len(v) for v in per_image.values()) >= 2
    # the empty-prompt state is the text encoder's encoding of ""
    torch.testing.assert_close(task.null_text, task.components.text_encoder.encode([""])[0])


def test_latents_are_scaled_by_the_vae_scaling_factor(dropout_task):
    task = dropout_task
    task.components.vae.register_to_config(scaling_factor=0.5)
    try:
        a = task.batch([0, 1], torch.Generator().manual_seed(3))["latents"]
        raw = task.cache.batch([0, 1], torch.Generator().manual_seed(3)).latents
        torch.testing.assert_close(a, 0.5 * raw)
    finally:
        task.components.vae.register_to_config(scaling_factor=1.0)


@pytest.mark.parametrize("overrides", [
    (),
    ("unet.prediction_type=v_prediction", "unet.zero_terminal_snr=true", "unet.noise_offset=0.1"),
])
def test_unet_run_end_to_end_final_folder_generates(tmp_path, overrides):
    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(1)
    recipe = _recipe("train.validate_every=3", *overrides)
    result = train_task("unet", recipe, tmp_path / "run")
    assert result.step == 3 and result.final_dir == tmp_path / "run" / "final"
    pipe = Pipeline.from_pretrained(result.final_dir)
    image = pipe("a red square", steps=3, seed=0).images[0]
    assert image.size == (recipe.data.image_size, recipe.data.image_size)
    config = pipe.components.scheduler_config
    assert config["prediction_type"] == recipe.unet.prediction_type
    assert bool(config.get("rescale_betas_zero_snr", False)) == recipe.unet.zero_terminal_snr
    assert pipe.components.meta["training"]["unet"] == dataclasses.asdict(recipe.unet) | {
        "validation_prompts": list(recipe.unet.validation_prompts), "repeats": list(recipe.unet.repeats)}
    # validation wrote a loadable model folder and a grid, and training went on with a trainable UNet
    assert Pipeline.from_pretrained(tmp_path / "run" / "validation" / "step-00000003" / "model") is not None
    assert (tmp_path / "run" / "validation" / "step-00000003" / "samples.png").is_file()
    # the trained UNet differs from the initial one
    from ldmkit.models.presets import build_components

    initial = build_components("tiny", seed=0).unet.state_dict()
    trained = pipe.components.unet.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)


def test_class_conditional_captions_come_from_the_class_label(tmp_path):
    from PIL import Image

    from ldmkit.data import CaptionDataset
    from ldmkit.training.run_data import with_class_captions

    for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (32, 32), colour).save(tmp_path / cls / f"{i}.png")
    ds = with_class_captions(CaptionDataset.open(tmp_path), "a drawing of a {}")
    assert {s.captions for s in ds.samples} == {("a drawing of a cat",), ("a drawing of a dog",)}


def test_fine_tuning_starts_from_a_model_folder(tmp_path):
    from ldmkit.models.folder import load_components

    torch.set_num_threads(1)
    first = train_task("unet", _recipe("train.steps=1"), tmp_path / "first")
    start = load_components(first.final_dir).unet.state_dict()
    task = UNetTask(_recipe(f"model.init_from={first.final_dir}"), tmp_path / "second")
    assert all(torch.equal(start[k], v) for k, v in task.components.unet.state_dict().items())
    assert all(p.requires_grad for p in task.components.unet.parameters())


def test_a_preset_beside_init_from_must_be_the_folders_own(tmp_path):
    """The architecture comes from model.init_from: another preset name would have no effect, so it is refused;
    without one the recorded recipe says null, not the fresh-model default."""
    torch.set_num_threads(1)
    first = train_task("unet", _recipe("train.steps=1"), tmp_path / "first")  # tiny.yaml: preset tiny
    refused = "model.preset small64 has no effect with model.init_from .* architecture is tiny"
    with pytest.raises(UsageError, match=refused):
        UNetTask(_recipe(f"model.init_from={first.final_dir}", "model.preset=small64"), tmp_path / "second")
    third = UNetTask(_recipe(f"model.init_from={first.final_dir}"), tmp_path / "third")
    assert third.components.meta["preset"] == "tiny"
    recipe = load_recipe(TINY.parent / "default-unet-mix.yaml", UNetRecipe)
    assert recipe.model.preset is None and recipe.model.init_from == "default"


def test_a_model_trained_from_a_shipped_one_does_not_inherit_its_ship_record(tmp_path):
    import json

    from ldmkit.models.folder import model_hash

    torch.set_num_threads(1)
    first = train_task("unet", _recipe("train.steps=1"), tmp_path / "first")
    record_file = first.final_dir / "ldmkit.json"
    record = json.loads(record_file.read_text())
    shipped = {"name": "v1", "shipped": {"source_hash": "abc"}, "reference_image": {"sha256": {"x": "0" * 64}},
               "metrics": {"eval": {"fid": 1.0}}, "recipe": {"file": "r.yaml"}, "dataset_cards": [{"name": "d"}],
               "training_eval": [{"step": 1, "clip_score": 20.0}]}
    record_file.write_text(json.dumps({**record, **shipped}))
    task = UNetTask(_recipe(f"model.init_from={first.final_dir}"), tmp_path / "second")
    meta = task.components.meta
    assert not set(shipped) & set(meta)  # another model now: its name, ship, image hash and metrics are not its own
    assert meta["init_model"] == {"from": str(first.final_dir), "model_hash": model_hash(first.final_dir), "name": "v1"}
    assert meta["sampling"] == record["sampling"]  # what it samples with is kept


def test_every_checkpoint_holds_a_model_folder_that_generates(tmp_path):
    from safetensors.torch import load_file

    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(1)
    recipe = _recipe("train.steps=4", "train.checkpoint_every=2", "train.keep_last=2")
    assert recipe.train.ema_enabled
    result = train_task("unet", recipe, tmp_path / "run")
    for step in (2, 4):
        folder = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
        pipe = Pipeline.from_pretrained(folder / "model")
        assert pipe.components.meta["step"] == step
        image = pipe("a red square", steps=3, seed=0).images[0]
        assert image.size == (recipe.data.image_size, recipe.data.image_size)
        # the model folder holds the EMA weights (as final/ does), the resume files the training weights
        ema = load_file(str(folder / "ema.safetensors"))
        raw = load_file(str(folder / "model.unet.safetensors"))
        unet = pipe.components.unet.state_dict()
        assert all(torch.equal(unet[k], ema[f"unet.{k}"]) for k in raw if f"unet.{k}" in ema)
        assert any(not torch.equal(unet[k], raw[k]) for k in raw)
    final = Pipeline.from_pretrained(result.final_dir).components.unet.state_dict()
    assert all(torch.equal(final[k], v) for k, v in unet.items())  # step 4 checkpoint == final


def test_latent_sample_false_trains_on_the_posterior_mean(dropout_task):
    """With unet.latent_sample=false the batch holds the cached posterior mean (no noise drawn)."""
    import dataclasses

    task = dropout_task
    original = task.recipe
    task.recipe = dataclasses.replace(original, unet=dataclasses.replace(original.unet, latent_sample=False))
    try:
        a = task.batch([0, 1], torch.Generator().manual_seed(3))["latents"]
        b = task.batch([0, 1], torch.Generator().manual_seed(4))["latents"]
        mean = task.cache.batch([0, 1], torch.Generator().manual_seed(3), sample=False).latents
        torch.testing.assert_close(a, mean * task.components.scaling_factor)
        torch.testing.assert_close(a, b)
    finally:
        task.recipe = original
    sampled = task.batch([0, 1], torch.Generator().manual_seed(3))["latents"]
    assert not torch.allclose(sampled, a)


def test_building_the_latent_cache_shows_a_bar_and_reusing_it_does_not(tmp_path, capsys):
    torch.set_num_threads(1)
    recipe = _recipe("train.progress_bar=true", "train.steps=1")
    train_task("unet", recipe, tmp_path / "run")
    assert "caching latents and text states" in capsys.readouterr().err
    UNetTask(recipe, tmp_path / "run")  # the same data and encoders: the cache is reused
    assert "caching" not in capsys.readouterr().err
