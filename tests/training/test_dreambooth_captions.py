"""dreambooth.instance_captions: each subject image's own captions, appended to the instance prompt."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ldmkit.errors import DataError, UsageError
from ldmkit.training.dreambooth import instance_samples
from ldmkit.training.recipes_personal import DreamBoothSection


def images(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"s{i}.png")
    return folder


def section(folder, **kw):
    return DreamBoothSection(instance_data=str(folder), instance_prompt="a zxq person", class_prompt="a person", **kw)


def test_sidecar_captions_are_appended_to_the_instance_prompt(tmp_path):
    folder = images(tmp_path / "subject")
    (folder / "s0.txt").write_text("looking serious, on a pink background\n")
    (folder / "s1.txt").write_text("winking\n\ngrinning, on a gray background\n")  # two captions, a blank line
    (folder / "s2.txt").write_text("eating\n")
    got = {s.image_id: s.captions for s in instance_samples(section(folder, instance_captions=True))}
    assert got == {"instance/s0.png": ("a zxq person", "a zxq person, looking serious, on a pink background"),
                   "instance/s1.png": ("a zxq person", "a zxq person, winking",
                                       "a zxq person, grinning, on a gray background"),
                   "instance/s2.png": ("a zxq person", "a zxq person, eating")}
    plain = instance_samples(section(folder))  # off (the default): the captions beside the images are not read
    assert {s.captions for s in plain} == {("a zxq person",)}


def test_metadata_jsonl_captions(tmp_path):
    folder = images(tmp_path / "subject", 2)
    rows = [{"file_name": "s0.png", "text": "smiling"}, {"file_name": "s1.png", "text": "on a yellow background"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = [s.captions for s in instance_samples(section(folder, instance_captions=True))]
    assert got == [("a zxq person", "a zxq person, smiling"), ("a zxq person", "a zxq person, on a yellow background")]


def test_an_image_without_a_caption_is_named(tmp_path):
    folder = images(tmp_path / "subject")
    (folder / "s0.txt").write_text("winking\n")
    (folder / "s2.txt").write_text("eating\n")
    with pytest.raises(DataError, match=r"s1\.png has no caption \(1 of 3 images"):
        instance_samples(section(folder, instance_captions=True))


def test_the_key_must_be_a_bool(tmp_path):
    with pytest.raises(UsageError, match="instance_captions"):
        section(tmp_path, instance_captions="yes")
