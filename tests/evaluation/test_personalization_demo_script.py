"""scripts/personalization_demo.py (issue 16's demo): how unseen its subject is, counted against every phase's
avatars, and `prepare` reuses only a folder that holds that subject."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("personalization_demo", ROOT / "scripts" / "personalization_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_subject_is_unseen_by_the_default_model(demo):
    """Counted against every phase's avatars (the GPU phase's 6,000), as docs/personalization.md reports it: no
    training avatar is the subject, and its closest ones (SUBJECT's docstring) are the documented ones."""
    report = demo.novelty()
    assert report["training_avatars"] == 6000
    assert report["max_shared_identity_attributes"] == 4 < report["identity_attributes"]
    assert report["same_hair_colour_and_facial_hair"] == 1
    first_2000 = demo.novelty(train=demo.training_avatars()[:2000])  # what `pick` counted when it chose SUBJECT
    assert first_2000["max_shared_identity_attributes"] <= demo.MAX_SHARED
    assert first_2000["same_hair_colour_and_facial_hair"] == 0


def test_the_instruments_read_the_subject_through_the_shipped_autoencoder(demo):
    from ldmkit.models.attributes import load_attribute_classifier
    from ldmkit.models.packaged import default_model_dir
    from ldmkit.pipeline import Pipeline

    reading = demo.instrument_reading(demo.SUBJECT, load_attribute_classifier(default_model_dir()),
                                      Pipeline.default(), views=8)
    assert set(reading) == {"real", "vae", "real_smiling", "vae_smiling"}
    assert min(reading.values()) >= demo.READABLE, reading
    # the subject it replaced: its hoodie does not survive the autoencoder (why `pick` checks through it)
    old = {**demo.SUBJECT, "top": "big_hair", "hair_color": "black", "skin": "dark_brown",
           "facial_hair": "beard_magestic", "clothing": "hoodie", "clothing_color": "pastel_green"}
    before = demo.instrument_reading(old, load_attribute_classifier(default_model_dir()), Pipeline.default(), views=8)
    assert before["vae"] < demo.READABLE and before["vae"] < before["real"] - 0.1, before


def test_prepare_writes_the_subject_then_reuses_it_and_refuses_other_images(demo, tmp_path):
    folder = tmp_path / "subject"
    config = tmp_path / "recipe.yaml"
    config.write_text(f"dreambooth:\n  instance_data: {folder}\n", encoding="utf-8")
    args = Namespace(config=config)
    assert demo.prepare(args) == folder
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == demo.INSTANCE_IMAGES and len(list(folder.glob("*.txt"))) == demo.INSTANCE_IMAGES
    stamp = pngs[0].stat().st_mtime_ns
    demo.prepare(args)  # the same subject: reused, nothing rewritten
    assert pngs[0].stat().st_mtime_ns == stamp
    pixels = np.asarray(Image.open(pngs[3]).convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(pngs[3])
    with pytest.raises(SystemExit, match="holds other images than this subject's"):
        demo.prepare(args)
    assert np.array_equal(np.asarray(Image.open(pngs[3]).convert("RGB")), pixels)  # left as it was
