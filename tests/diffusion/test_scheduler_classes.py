"""Training schedules (issue 12.5): what each diffusers scheduler class can represent, the scheduler config a
trained model ships with, and that a schedule the saved class cannot represent fails before training starts."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import diffusers
import pytest
import torch

from ldmkit.config import load_recipe
from ldmkit.diffusion.beta_schedules import BETA_SCHEDULES
from ldmkit.diffusion.scheduler_classes import CAPABILITIES, cannot_represent, trained_scheduler_config
from ldmkit.diffusion.schedules import NoiseSchedule
from ldmkit.errors import UsageError
from ldmkit.models.presets import SD15_SCHEDULER
from ldmkit.training.recipes import UNetRecipe

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
FAST = ["train.steps=2", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "data.builtin_n=16", "train.log_every=1"]


def _diffusers_accepts(cls: str, beta_schedule: str, zero_snr: bool) -> bool:
    config = {"beta_schedule": beta_schedule, **({"rescale_betas_zero_snr": True} if zero_snr else {})}
    scheduler_cls = getattr(diffusers, cls)
    if zero_snr and "rescale_betas_zero_snr" not in inspect.signature(scheduler_cls.__init__).parameters:
        return False  # from_config would drop the key silently: the class cannot hold it
    try:
        scheduler_cls.from_config(config)
    except NotImplementedError:
        return False
    return True


@pytest.mark.parametrize("cls", list(CAPABILITIES))
def test_capabilities_match_diffusers(cls):
    for beta_schedule in BETA_SCHEDULES:
        for zero_snr in (False, True):
            ours = cannot_represent(cls, beta_schedule, zero_snr) is None
            assert ours == _diffusers_accepts(cls, beta_schedule, zero_snr), (cls, beta_schedule, zero_snr)


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("zero_snr", [False, True])
def test_saved_config_loads_in_diffusers_with_the_trained_schedule(beta_schedule, zero_snr):
    """From SD 1.5's PNDM config: the class chosen holds the schedule, and diffusers' alphas are the ones trained on."""
    config = trained_scheduler_config(SD15_SCHEDULER, prediction_type="v_prediction" if zero_snr else "epsilon",
                                      zero_terminal_snr=zero_snr, beta_schedule=beta_schedule)
    expected = {"sigmoid": "DDPMScheduler"}.get(beta_schedule, "DDIMScheduler" if zero_snr else "PNDMScheduler")
    assert config["_class_name"] == expected
    scheduler = getattr(diffusers, expected).from_config(config)
    assert scheduler.config.beta_schedule == beta_schedule
    assert getattr(scheduler.config, "rescale_betas_zero_snr", False) == zero_snr
    ours = NoiseSchedule.from_scheduler_config(config).alphas_cumprod()
    ref = scheduler.alphas_cumprod
    if zero_snr:  # diffusers stores alpha_bar_T = 0 exactly, ldmkit 2**-24 (sigma stays finite)
        ours, ref = ours[:-1], ref[:-1]
        assert config["timestep_spacing"] == "trailing"
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    assert config.get("clip_sample", False) is False  # latents are never clipped to [-1, 1]
    assert set(config) - {"_class_name"} <= set(scheduler.config)  # no keys the class would ignore


def test_recipe_end_points_and_explicit_class():
    config = trained_scheduler_config(SD15_SCHEDULER, prediction_type="epsilon", zero_terminal_snr=False,
                                      beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                                      scheduler="EulerDiscreteScheduler")
    assert (config["_class_name"], config["beta_start"], config["beta_end"]) == ("EulerDiscreteScheduler", 0.0001, 0.02)
    assert "skip_prk_steps" not in config  # PNDM's key does not travel to Euler
    assert trained_scheduler_config(SD15_SCHEDULER, prediction_type="epsilon", zero_terminal_snr=False) == {
        **SD15_SCHEDULER}  # nothing asked, nothing changed


@pytest.mark.parametrize("overrides,match", [
    (["unet.scheduler=DDIMScheduler", "unet.beta_schedule=sigmoid"], "DDIMScheduler cannot represent"),
    (["unet.scheduler=PNDMScheduler", "unet.prediction_type=v_prediction", "unet.zero_terminal_snr=true"],
     "no rescale_betas_zero_snr"),
    (["unet.scheduler=LMSDiscreteScheduler"], "unet.scheduler 'LMSDiscreteScheduler' is not one of"),
    (["unet.beta_schedule=quadratic"], "unet.beta_schedule"),
    (["unet.beta_schedule=squaredcos_cap_v2", "unet.beta_end=0.02"], "no effect"),
    (["unet.beta_start=0.02", "unet.beta_end=0.01"], "must be < unet.beta_end"),
])
def test_recipe_check_refuses_at_load_time(overrides, match):
    with pytest.raises(UsageError, match=match):
        load_recipe(TINY, UNetRecipe, overrides)


@pytest.mark.slow  # a tiny model built and saved, then a 2-step run: ~20 s on a busy 2-core machine
def test_start_dependent_schedule_fails_before_training_starts(tmp_path):
    """The start model's own schedule (sigmoid, from its folder) with unet.scheduler=PNDMScheduler: refused when
    the trainer starts, before the dataset, the latent cache or any step."""
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components
    from ldmkit.training.trainers import train_task

    start = build_components("tiny", seed=0)
    start.scheduler_config = {**start.scheduler_config, "_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"}
    save_components(start, tmp_path / "start")
    recipe = load_recipe(TINY, UNetRecipe, [*FAST, f"model.init_from={tmp_path / 'start'}",
                                            "unet.scheduler=PNDMScheduler"])
    with pytest.raises(UsageError, match="PNDMScheduler cannot represent beta_schedule='sigmoid'"):
        train_task("unet", recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "cache").exists() and not (tmp_path / "run" / "dataset").exists()


@pytest.mark.slow  # a tiny model built and saved, then a 2-step run: ~20 s on a busy 2-core machine
def test_sigmoid_training_run_ships_a_ddpm_scheduler_it_samples_with(tmp_path):
    from ldmkit.pipeline import Pipeline
    from ldmkit.training.trainers import train_task
    from ldmkit.training.unet import UNetTask

    torch.set_num_threads(1)
    recipe = load_recipe(TINY, UNetRecipe, [*FAST, "unet.beta_schedule=sigmoid", "unet.beta_start=0.0001",
                                            "unet.beta_end=0.02"])
    result = train_task("unet", recipe, tmp_path / "run")
    saved = json.loads((result.final_dir / "scheduler" / "scheduler_config.json").read_text())
    assert (saved["_class_name"], saved["beta_schedule"], saved["beta_start"]) == ("DDPMScheduler", "sigmoid", 0.0001)
    ref = diffusers.DDPMScheduler.from_pretrained(result.final_dir, subfolder="scheduler").alphas_cumprod
    task = UNetTask(recipe, tmp_path / "run")  # the alphas the loss used
    torch.testing.assert_close(task.alphas_cumprod, ref)
    image = Pipeline.from_pretrained(result.final_dir)("a red square", steps=3, sampler="dpmpp_2m", seed=0).images[0]
    assert image.size == (32, 32)
