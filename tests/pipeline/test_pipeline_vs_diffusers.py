"""The ldmkit pipeline against diffusers' StableDiffusionPipeline on the same tiny random components."""

import diffusers
import numpy as np
import pytest
import torch

from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline

SCHEDULER_OF = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler",
                "pndm": "PNDMScheduler", "euler_ancestral": "EulerAncestralDiscreteScheduler"}


@pytest.fixture(scope="module")
def components():
    return build_components("tiny", seed=0)


def diffusers_pipe(c, sampler):
    sched = getattr(diffusers, SCHEDULER_OF[sampler]).from_config(c.scheduler_config)
    pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_array(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m", "pndm", "euler_ancestral"])
def test_same_images_as_stable_diffusion_pipeline(components, sampler):
    ours = Pipeline(components)(
        "a red circle on the left", negative_prompt="blurry", sampler=sampler, steps=8, guidance=5.0,
        guidance_rescale=0.3, seed=11, num_images=2)
    ref = diffusers_pipe(components, sampler)(
        "a red circle on the left", negative_prompt="blurry", num_inference_steps=8, guidance_scale=5.0,
        guidance_rescale=0.3, num_images_per_prompt=2, output_type="pil",
        height=ours.params.height, width=ours.params.width,
        generator=[torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]).images
    diff = np.abs(as_array(ours.images) - as_array(ref)).max()
    assert diff <= 2, f"{sampler}: max pixel difference {diff}/255"


def test_image_k_of_a_batch_equals_a_single_run_with_seed_plus_k(components):
    pipe = Pipeline(components)
    batch = pipe("a blue square", steps=5, sampler="euler_ancestral", seed=3, num_images=3)
    single = pipe("a blue square", steps=5, sampler="euler_ancestral", seed=5, num_images=1)
    assert batch.seeds == [3, 4, 5]
    assert np.array_equal(np.asarray(batch.images[2]), np.asarray(single.images[0]))
    assert not np.array_equal(np.asarray(batch.images[0]), np.asarray(batch.images[1]))


def test_img2img_strength_zero_is_the_vae_round_trip(components):
    pipe = Pipeline(components)
    size = pipe.components.image_size
    rng = np.random.default_rng(0)
    init = __import__("PIL.Image").Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    out = pipe("anything", init_image=init, strength=0.0, steps=10, seed=0)
    with torch.no_grad():
        expect = pipe.decode(pipe.encode_image(init, size, size))
    from ldmkit.data.images import to_pil

    assert np.array_equal(np.asarray(out.images[0]), np.asarray(to_pil(expect)[0]))


def test_img2img_runs_the_last_strength_fraction_of_the_steps(components):
    pipe = Pipeline(components)
    size = pipe.components.image_size
    init = __import__("PIL.Image").Image.new("RGB", (size, size), (200, 30, 30))
    base = np.asarray(pipe("x", init_image=init, strength=0.0, steps=10).images[0])
    for strength, expect_steps in ((0.3, 3), (0.75, 7), (1.0, 10)):
        out = pipe("x", init_image=init, strength=strength, steps=10, trajectory=True)
        assert len(out.trajectory.steps) == expect_steps
        assert not np.array_equal(np.asarray(out.images[0]), base)


def test_trajectory_records_every_step_and_ends_clean(components):
    pipe = Pipeline(components)
    out = pipe("a green triangle", steps=6, sampler="ddim", trajectory=True)
    traj = out.trajectory
    assert traj.steps == list(range(6))
    assert all(a > b for a, b in zip(traj.sigmas, traj.sigmas[1:]))
    assert len(traj.noisy[0]) == len(traj.predicted[0]) == 1


def test_bad_arguments_are_refused_before_work(components):
    from ldmkit.errors import UsageError

    pipe = Pipeline(components)
    with pytest.raises(UsageError, match="choose one of"):
        pipe("x", sampler="nope")
    with pytest.raises(UsageError, match="multiple of the VAE factor"):
        pipe("x", height=33, width=32)
    with pytest.raises(UsageError, match="steps must be"):
        pipe("x", steps=0)
    with pytest.raises(UsageError, match="guidance"):
        pipe("x", guidance=-1)


def test_long_prompt_warns_with_dropped_token_count(components):
    out = Pipeline(components)("word " * 200, steps=1)
    assert out.warnings and "dropped" in out.warnings[0]


def test_non_finite_weights_stop_sampling(components):
    from ldmkit.errors import LdmkitError

    c = build_components("tiny", seed=0)
    with torch.no_grad():
        next(c.unet.parameters()).fill_(float("nan"))
    with pytest.raises(LdmkitError, match="non-finite"):
        Pipeline(c)("x", steps=2)
