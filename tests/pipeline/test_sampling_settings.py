"""SamplingSettings (the typed request) and how the pipeline uses it: defaults, limits, runs split by memory."""

import ast
import dataclasses
import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.errors import UsageError
from ldmkit.pipeline import SamplingSettings, limits, settings as settings_module
from ldmkit.pipeline.settings import check_text


def test_every_field_has_a_docstring_and_defaults_are_valid():
    tree = ast.parse(inspect.getsource(SamplingSettings))
    body = tree.body[0].body
    documented = {stmt.target.id for stmt, nxt in zip(body, body[1:])
                  if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value.value, str)}
    assert documented == {f.name for f in dataclasses.fields(SamplingSettings)}
    s = SamplingSettings()
    assert s.steps is None and s.seed == 0 and s.num_images == 1 and s.max_pixels == limits.MAX_PIXELS


@pytest.mark.parametrize("fields,message", [
    ({"steps": True}, "--steps must be an integer"),
    ({"steps": 2.0}, "--steps must be an integer"),
    ({"guidance": float("nan")}, "--guidance must be a finite number"),
    ({"guidance": "7"}, "--guidance must be a number"),
    ({"num_images": 0}, "--n must be in 1..10000"),
    ({"width": 64, "height": 64, "max_pixels": 64 * 63}, "over the budget"),
    ({"width": 0}, "width must be a positive"),
    ({"seed": 2**64}, "--seed must be in 0..2^64-1"),
    ({"seed": 2**64 - 2, "num_images": 3}, "would pass 2^64-1"),
    ({"karras": 1}, "karras must be True or False"),
    ({"sampler": "pndm", "karras": True}, "--karras does not apply"),
    ({"timestep_spacing": "Leading"}, "--timestep-spacing must be one of leading, linspace, trailing"),
    ({"negative_prompt": "x" * (limits.MAX_PROMPT_CHARS + 1)}, "negative prompt has 4001 characters"),
])
def test_bad_fields_are_refused_and_replace_checks_again(fields, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[").replace("^", r"\^")):
        SamplingSettings(**fields)
    with pytest.raises(UsageError):
        dataclasses.replace(SamplingSettings(), **fields)


def test_edges_are_allowed():
    SamplingSettings(seed=2**64 - 1)
    SamplingSettings(seed=0, num_images=limits.MAX_IMAGES, steps=limits.MAX_STEPS, guidance=0, strength=1)
    SamplingSettings(width=2048, height=2048)
    check_text("\N{GRINNING FACE} " * 10, "prompt")
    check_text("a" * limits.MAX_PROMPT_CHARS, "prompt")
    with pytest.raises(UsageError, match="not valid UTF-8"):
        check_text("caf\udce9", "prompt")


def test_random_seed_is_drawn_once_and_leaves_room_for_every_image():
    s = SamplingSettings(seed=-1, num_images=5)
    with pytest.raises(UsageError, match="with_seed"):
        s.seeds()
    drawn = {s.with_seed().seed for _ in range(20)}
    assert len(drawn) > 1 and all(0 <= seed <= limits.MAX_SEED - 4 for seed in drawn)
    fixed = SamplingSettings(seed=7, num_images=3)
    assert fixed.with_seed() is fixed and fixed.seeds() == [7, 8, 9]


def test_settings_import_without_torch():
    code = ("import sys; from ldmkit.pipeline import SamplingSettings; "
            "SamplingSettings(sampler='euler', karras=True, steps=3); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_memory_estimate_grows_with_size_and_always_allows_one_image():
    kw = {"factor": 8, "vae_channels": 128, "unet_channels": 1280, "latent_channels": 4, "guided": True}
    small, large = limits.bytes_per_image(64, 64, **kw), limits.bytes_per_image(512, 512, **kw)
    assert 0 < small < large
    assert limits.images_per_run(large, budget=large * 3 + 1) == 3
    assert limits.images_per_run(large * 100, budget=large) == 1


# -- the pipeline with settings ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Pipeline(build_components("tiny", seed=0))
    torch.set_num_threads(before)


def test_resolve_fills_the_model_defaults(pipe):
    s, notes = pipe.resolve(SamplingSettings(seed=-1))
    assert (s.steps, s.sampler, s.guidance) == (25, pipe.defaults()["sampler"], 7.5) and s.guidance_rescale == 0.0
    assert (s.width, s.height) == (32, 32) and s.timestep_spacing == "leading" and s.strength is None
    assert s.seed != -1 and notes == []
    with pytest.raises(UsageError, match="strength has no effect without an init image"):
        pipe.resolve(SamplingSettings(strength=0.5))


def test_a_request_larger_than_the_memory_estimate_is_split_into_runs(pipe):
    settings = SamplingSettings(steps=2, num_images=3, seed=4, guidance=3.0)
    whole = pipe("a red circle", settings, trajectory=True)
    budget, pipe.sampling_memory = pipe.sampling_memory, 1  # one image per run
    try:
        assert pipe.images_per_run(pipe.resolve(settings)[0]) == 1
        split = pipe("a red circle", settings, trajectory=True)
        batch = pipe.generate_batch(["a red circle", "a blue square"], [4, 5], dataclasses.replace(settings,
                                                                                                   num_images=1))
    finally:
        pipe.sampling_memory = budget
    assert split.seeds == whole.seeds == [4, 5, 6] and len(split.images) == 3
    for a, b in zip(split.images, whole.images):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert len(split.trajectory.noisy[0]) == 3 and split.trajectory.steps == whole.trajectory.steps
    assert [r.seeds for r in batch] == [[4], [5]]
    assert np.abs(np.asarray(batch[0].images[0], dtype=int) - np.asarray(whole.images[0], dtype=int)).max() <= 1


def test_settings_object_or_keywords_never_both(pipe):
    with pytest.raises(UsageError, match="not both"):
        pipe("x", SamplingSettings(steps=1), steps=2)
    with pytest.raises(UsageError, match="num_images has no effect"):
        pipe.generate_batch(["x"], [0], num_images=2, steps=1)
    with pytest.raises(UsageError, match="--seed must be in 0..2"):
        pipe.generate_batch(["x"], [-5], steps=1)
    with pytest.raises(UsageError, match="prompt has"):
        pipe("x" * (limits.MAX_PROMPT_CHARS + 1), steps=1)


def test_large_init_image_is_sampled_at_the_model_size_with_a_note(pipe):
    init = Image.new("RGB", (128, 96), (200, 30, 30))
    result = pipe("x", init_image=init, steps=2, strength=0.5)
    assert result.images[0].size == (32, 24)
    assert result.notes == ["init image 128x96 is larger than the model's 32x32: sampling at 32x24 "
                            "(pass --size WxH to choose)"]
    odd = pipe("x", init_image=Image.new("RGB", (15, 16)), steps=1, strength=0.5)
    assert odd.images[0].size == (14, 16) and "not a multiple of the VAE factor 2" in odd.notes[0]
    given = pipe("x", init_image=init, steps=1, strength=0.5, width=16, height=16)
    assert given.images[0].size == (16, 16) and given.notes == []


def test_karras_and_spacing_change_the_sigmas_and_are_recorded(pipe):
    from ldmkit.pipeline.output import parameters_text

    plain = pipe("x", steps=4, sampler="euler", seed=1)
    karras = pipe("x", steps=4, sampler="euler", seed=1, karras=True, timestep_spacing="trailing")
    assert not torch.allclose(plain.latents, karras.latents)
    text = parameters_text(karras.params)
    assert "Schedule type: Karras" in text and "Timestep spacing: trailing" in text
    assert "Schedule type" not in parameters_text(plain.params)
    assert "Timestep spacing" not in parameters_text(plain.params)  # the model's own: not repeated


def test_png_text_chunk_is_bounded(pipe):
    from ldmkit.pipeline.output import parameters_text

    params = dataclasses.replace(pipe("x", steps=1).params, prompt="p" * limits.MAX_PROMPT_CHARS,
                                 negative_prompt="n" * limits.MAX_PROMPT_CHARS, model_name="m" * 10**6)
    text = parameters_text(params)
    assert len(text) == limits.MAX_PNG_TEXT_CHARS and text.endswith("...")


def test_sixteen_bit_grey_init_image_is_scaled_not_clipped(tmp_path):
    from ldmkit.data.images import load_rgb_within

    grey = np.array([[0, 257 * 128], [65535, 257 * 64]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")  # mode I;16
    image, steps = load_rgb_within(tmp_path / "g.png", limits.MAX_INIT_IMAGE_PIXELS)
    assert image.mode == "RGB" and np.asarray(image)[:, :, 0].tolist() == [[0, 128], [255, 64]]
    assert steps and "RGB" in steps[0]
    assert settings_module.DEFAULT_STRENGTH == 0.8
