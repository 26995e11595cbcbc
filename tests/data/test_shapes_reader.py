"""The shapes reader against the generator's own labels, and its behaviour on imperfect images."""

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from ldmkit.data.builtin.shapes import Scene, random_scene, render_scene
from ldmkit.data.builtin.shapes_reader import attribute_accuracy, read_shapes


@pytest.mark.parametrize("size", [32, 64])
def test_reader_scores_at_least_99_percent_on_real_images(size):
    right = total = 0
    for i in range(300):
        scene = random_scene(random.Random(f"reader-{size}-{i}"))
        read = read_shapes(render_scene(scene, size))
        truth = scene.labels()
        right += attribute_accuracy(read["labels"], truth) * len(truth)
        total += len(truth)
    assert right / total >= 0.99


def test_reader_is_deterministic_and_confident_on_clean_images():
    scene = Scene("white", (("triangle", "red", "large", 0.25, 0.5),), "left", "none")
    img = render_scene(scene, 64)
    first, second = read_shapes(img), read_shapes(img)
    assert first == second
    assert first["labels"] == scene.labels()
    assert first["overall"] > 0.5


def test_reader_lowers_confidence_on_degraded_images_but_still_guesses():
    scene = Scene("black", (("circle", "blue", "large", 0.5, 0.5),), "centre", "none")
    clean = read_shapes(render_scene(scene, 64))
    rng = np.random.default_rng(0)
    noisy = np.asarray(render_scene(scene, 64).filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)
    noisy = Image.fromarray(np.clip(noisy + rng.normal(0, 25, noisy.shape), 0, 255).astype(np.uint8))
    degraded = read_shapes(noisy)
    assert set(degraded["labels"]) == set(clean["labels"])
    assert degraded["labels"]["color"] == "blue" and degraded["labels"]["background"] == "black"
    assert degraded["confidence"]["shape"] <= clean["confidence"]["shape"]
    assert all(0.0 <= c <= 1.0 for c in degraded["confidence"].values())


def test_blank_image_reads_as_no_shape():
    read = read_shapes(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert read["labels"]["count"] == "0" and read["labels"]["background"] == "gray"


def test_large_images_are_read_like_small_ones():
    scene = random_scene(random.Random("big"))
    assert read_shapes(render_scene(scene, 256))["labels"] == scene.labels()


def test_attribute_accuracy_counts_matching_columns():
    assert attribute_accuracy({"a": "1", "b": "2"}, {"a": "1", "b": "3"}) == 0.5
