"""Full-fine-tune DreamBooth (`ldmkit train unet` with a `dreambooth` section, issue 16): the whole UNet trains on
subject + class images, the model folder names the DreamBooth card, the two-part loss, exact resume after SIGKILL,
the recipe's checks, and the plain UNet loss left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ldmkit.config import load_recipe
from ldmkit.errors import UsageError
from ldmkit.training.recipes import EmbeddingRecipe, LoraRecipe, UNetRecipe
from ldmkit.training.trainers import resume_run, run_trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG = CONFIGS / "dreambooth-full-tiny.yaml"
UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


def overrides(folder: Path, *more: str) -> list[str]:
    return [f"dreambooth.instance_data={folder}", *more]


def _recipe(folder: Path, *more: str) -> UNetRecipe:
    return load_recipe(CONFIG, UNetRecipe, overrides(folder, *more))


@pytest.mark.slow
def test_full_dreambooth_trains_the_whole_unet_into_a_model_folder_naming_the_card(tmp_path, subject):
    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(1)
    run = tmp_path / "run"
    result = run_trainer("unet", CONFIG, run, overrides(subject(tmp_path / "subject"), "train.steps=4",
                                                        "train.log_every=1", "dreambooth.prior_loss_weight=0.5",
                                                        "train.validate_every=4"))
    assert result.step == 4 and result.final_dir == run / "final"
    assert sorted(p.name for p in (run / "class_images").glob("*.png")) == [f"{i:04d}.png" for i in range(4)]
    pipe = Pipeline.from_pretrained(result.final_dir)
    assert pipe("a photo of zxq circle", steps=2, seed=0).images[0].size == (32, 32)
    meta = json.loads((result.final_dir / "ldmkit.json").read_text())
    card = meta["dataset"]["dreambooth"]
    assert card["instance_images"] == 3 and card["class_images"] == 4 and card["prior_loss_weight"] == 0.5
    assert meta["trainer"] == "unet" and meta["training"]["data"] is None
    assert meta["training"]["dreambooth"]["instance_prompt"] == "a photo of zxq circle"
    # validation: a model folder and a grid of the instance + class prompts (one 32 px image each)
    folder = run / "validation" / "step-00000004"
    assert json.loads((folder / "model" / "ldmkit.json").read_text())["dataset"] == meta["dataset"]
    assert Image.open(folder / "samples.png").size == (64, 32)
    # the whole UNet moved; the text encoder and the VAE are the base model's
    base, trained = build_components("tiny", seed=0), pipe.components
    unet0, unet1 = base.unet.state_dict(), trained.unet.state_dict()
    changed = [k for k in unet0 if not torch.equal(unet0[k], unet1[k])]
    assert len(changed) > 0.9 * len(unet0), f"{len(changed)} of {len(unet0)} UNet tensors changed"
    for part in ("vae", "text_encoder"):
        before = (base.vae if part == "vae" else base.text_encoder.model).state_dict()
        after = (trained.vae if part == "vae" else trained.text_encoder.model).state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), part
    # loss = instance loss + 0.5 * class loss, logged every step
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert len(logged) == 4
    for r in logged:
        assert r["loss"] == pytest.approx(r["instance_loss"] + 0.5 * r["prior_loss"], rel=1e-5)
        assert r["instance_loss"] != pytest.approx(r["prior_loss"], rel=1e-3)  # two different means


def test_batches_hold_subject_then_class_rows_and_only_the_unet_trains(tmp_path, subject):
    from ldmkit.training.objective import min_snr_weights, per_sample_mse, q_sample
    from ldmkit.training.unet import UNetTask

    torch.set_num_threads(1)
    task = UNetTask(_recipe(subject(tmp_path / "subject"), "dreambooth.prior_loss_weight=0.25"), tmp_path / "run")
    assert task.num_samples() == 3 and len(task.cache) == 3 + 4 and len(task.val) == 0
    assert all(p.requires_grad for p in task.components.unet.parameters())
    assert not any(p.requires_grad for p in task.components.vae.parameters())
    assert not any(p.requires_grad for p in task.components.text_encoder.model.parameters())
    assert task.validation_prompts() == ["a photo of zxq circle", "a photo of a circle"]
    batch = task.batch([2, 0], torch.Generator().manual_seed(0))
    assert batch["is_class"].tolist() == [False, False, True, True] and batch["latents"].shape[0] == 4
    ids = task.cache.image_ids
    assert [ids[r] for r in task.prior_rows.rows([2, 0], torch.Generator().manual_seed(0))[0][:2]] == [
        "instance/2.png", "instance/0.png"]
    # eq. 2: the subject rows' mean + 0.25 * the class rows' mean of the same draws' Min-SNR-weighted MSEs
    unet = task.components.unet
    with torch.no_grad():
        loss, metrics = task.loss({"unet": unet}, batch, torch.Generator().manual_seed(1))
    g, x0 = torch.Generator().manual_seed(1), batch["latents"]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, task.num_timesteps, (4,), generator=g)
    with torch.no_grad():
        prediction = unet(q_sample(x0, noise, t, task.alphas_cumprod), t, encoder_hidden_states=batch["text"]).sample
    per_sample = min_snr_weights(t, task.alphas_cumprod, 5.0, "epsilon") * per_sample_mse(prediction, noise)
    assert metrics["instance_loss"] == pytest.approx(float(per_sample[:2].mean()), rel=1e-6)
    assert metrics["prior_loss"] == pytest.approx(float(per_sample[2:].mean()), rel=1e-6)
    assert float(loss) == pytest.approx(float(per_sample[:2].mean() + 0.25 * per_sample[2:].mean()), rel=1e-6)


def test_plain_unet_loss_is_the_weighted_denoising_loss_it_was(tmp_path):
    """Without dreambooth, UNetTask.loss is objective.denoising_loss of the same draws, bit for bit."""
    from ldmkit.training.objective import denoising_loss, min_snr_weights, offset_noise, q_sample
    from ldmkit.training.unet import UNetTask

    torch.set_num_threads(1)
    recipe = load_recipe(CONFIGS / "tiny.yaml", UNetRecipe, ["data.builtin_n=8", "unet.noise_offset=0.05"])
    assert recipe.dreambooth is None
    task = UNetTask(recipe, tmp_path / "run")
    assert task.prior_rows is None and task.num_samples() == len(task.cache)
    batch = task.batch([0, 1, 2, 3], torch.Generator().manual_seed(5))
    assert not batch["is_class"].any() and "text" in batch
    unet = task.components.unet
    with torch.no_grad():
        loss, metrics = task.loss({"unet": unet}, batch, torch.Generator().manual_seed(9))
    assert set(metrics) == {"caption_dropped"}
    g, x0 = torch.Generator().manual_seed(9), batch["latents"]
    noise = offset_noise(torch.randn(x0.shape, generator=g), 0.05, g)
    t = torch.randint(0, task.num_timesteps, (4,), generator=g)
    with torch.no_grad():
        prediction = unet(q_sample(x0, noise, t, task.alphas_cumprod), t, encoder_hidden_states=batch["text"]).sample
    weights = min_snr_weights(t, task.alphas_cumprod, recipe.unet.min_snr_gamma, "epsilon")
    reference = denoising_loss(prediction, noise, weights)
    assert torch.equal(loss, reference), (float(loss), float(reference))


def _killed_run(run_dir: Path, folder: Path, at: int) -> None:
    """What `ldmkit train unet` does, with the loss SIGKILLing the process at its `at`-th call."""
    import sys

    from ldmkit.training.loop import train
    from ldmkit.training.trainers import mark_run
    from ldmkit.training.unet import UNetTask

    recipe = _recipe(folder)
    mark_run(run_dir, "unet")
    task = sys.modules["ldmkit_tests_toy_task"].kill_at_loss_call(UNetTask(recipe, run_dir), at)
    train(task, recipe.train, run_dir, recipe=recipe)


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal(toy, tmp_path, subject):
    """SIGKILL inside step 5 of 6 (checkpoint at 3), `train resume`: the final UNet equals an uninterrupted run's."""
    folder = subject(tmp_path / "subject")
    ref = run_trainer("unet", CONFIG, tmp_path / "ref", overrides(folder))
    assert toy.run_in_child(_killed_run, tmp_path / "run", folder, 5) == -9
    assert not (tmp_path / "run" / "final").exists()
    result = resume_run(tmp_path / "run")  # the stored recipe (data: null, dreambooth: ...) read back
    assert result.resumed_from_step == 3 and result.step == 6
    a, b = (load_file(str(r.final_dir / UNET_WEIGHTS)) for r in (ref, result))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(str(tmp_path / "ref" / "checkpoints" / "step-00000003" / "model" / UNET_WEIGHTS))
    assert any(not torch.equal(a[k], base[k]) for k in a)  # steps 4..6 changed the weights the test compares


def test_recipe_checks(tmp_path, subject):
    folder = subject(tmp_path / "subject", 1)
    cases = [
        (["data.builtin=shapes"], "`data` has no effect with `dreambooth`"),
        (["unet.eval_clip=somewhere"], "eval_clip has no effect with dreambooth"),
        (["unet.class_conditional=true"], "class_conditional has no effect with dreambooth"),
        (["dreambooth.instance_prompt=a photo of a circle"], "must differ"),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError, match=message):
            run_trainer("unet", CONFIG, tmp_path / "run", overrides(folder, *extra))
    assert not (tmp_path / "run").exists()  # refused before any work
    # without `dreambooth`, `train unet` keeps its default dataset; `train lora` still needs one of the two
    recipe = load_recipe(CONFIG, UNetRecipe, ["dreambooth=null"])
    assert recipe.data is not None and recipe.data.builtin == "shapes" and recipe.dreambooth is None
    assert UNetRecipe().data == recipe.data
    with pytest.raises(UsageError, match="needs a `data` section"):
        load_recipe(CONFIG, LoraRecipe, ["dreambooth=null"])
    assert load_recipe(CONFIG, LoraRecipe, overrides(folder)).data is None
    with pytest.raises(UsageError, match="dreambooth has no effect in `train embedding`"):
        load_recipe(CONFIGS / "embedding-tiny.yaml", EmbeddingRecipe,
                    [f"dreambooth={{instance_data: {folder}, instance_prompt: a zxq circle}}"])
