"""Output files: names from the prompt, no overwriting, parameters readable back from the PNG."""

from PIL import Image

from ldmkit.pipeline.output import parameters_text, parse_parameters, save_image, slugify
from ldmkit.pipeline.txt2img import GenerationParams

PARAMS = GenerationParams("A red circle, on the LEFT!", "blurry, dark", 20, "dpmpp_2m", 7.5, 0.0, 42, 64, 48,
                          None, "abcd1234", "tiny")


def test_slug():
    assert slugify("A red circle, on the LEFT!") == "a-red-circle-on-the-left"
    assert slugify("!!!") == "image"
    assert len(slugify("word " * 100)) <= 48


def test_parameters_round_trip_through_png(tmp_path):
    path = save_image(Image.new("RGB", (64, 48)), PARAMS, tmp_path)
    text = Image.open(path).text["parameters"]
    assert text == parameters_text(PARAMS)
    back = parse_parameters(text)
    assert back["prompt"] == PARAMS.prompt and back["negative_prompt"] == "blurry, dark"
    assert back["Steps"] == "20" and back["Seed"] == "42" and back["Size"] == "64x48"
    assert back["Sampler"] == "dpmpp_2m" and back["Model hash"] == "abcd1234"


def test_existing_files_are_never_overwritten(tmp_path):
    first = save_image(Image.new("RGB", (8, 8), "red"), PARAMS, tmp_path)
    before = first.read_bytes()
    second = save_image(Image.new("RGB", (8, 8), "blue"), PARAMS, tmp_path)
    third = save_image(Image.new("RGB", (8, 8), "green"), PARAMS, tmp_path)
    assert first.name == "a-red-circle-on-the-left-42.png"
    assert second.name == "a-red-circle-on-the-left-42-1.png" and third.name.endswith("-42-2.png")
    assert first.read_bytes() == before
