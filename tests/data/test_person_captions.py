"""Issue 12 point 4: one caption rule for class folders, the same in the reader, `data stats`,
`unet.class_conditional`, the provenance that `model info` lists, and the prompt a person types."""

import json

import pytest
from PIL import Image

from ldmkit.data import CaptionDataset
from ldmkit.data.captions import CLASS_TEMPLATE, class_caption, class_name
from ldmkit.errors import UsageError

FOLDERS = ("mahesh_babu", "Prabhas", "allu__arjun ", "ram charan")


def person_folders(root, folders=FOLDERS):
    for k, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * k, 20 * i, 100)).save(root / folder / f"{i}.png")
    return root


def test_the_rule_turns_a_folder_into_the_words_a_person_types():
    assert class_caption("mahesh_babu") == "a photo of mahesh babu"
    assert class_name("allu__arjun ") == "allu arjun" and class_name("Prabhas") == "Prabhas"
    assert class_caption("ram_charan", "{}, portrait") == "ram charan, portrait"
    assert CLASS_TEMPLATE == "a photo of {}"
    for bad in ("a photo", "{} and {}", "a {style} of {}", 3):
        with pytest.raises(UsageError, match="exactly one"):
            class_caption("x", bad)


def test_reader_stats_class_conditional_and_provenance_agree(tmp_path):
    from ldmkit.data.stats import dataset_stats
    from ldmkit.training.data_provenance import dataset_classes
    from ldmkit.training.recipes import DataSection
    from ldmkit.training.run_data import with_class_captions

    root = person_folders(tmp_path / "faces")
    template = "a portrait of {}"
    dataset = CaptionDataset.open(root, class_template=template)
    expected = {folder: class_caption(folder, template) for folder in FOLDERS}
    assert expected["mahesh_babu"] == "a portrait of mahesh babu"

    read = {s.labels["class"]: s.captions for s in dataset.samples}
    assert read == {folder: (caption,) for folder, caption in expected.items()}
    conditional = with_class_captions(dataset, template)  # what unet.class_conditional trains on
    assert {s.labels["class"]: s.captions for s in conditional.samples} == read
    stats = dataset_stats(dataset)
    assert {f: v["caption"] for f, v in stats["classes"].items()} == expected
    assert {f: v["images"] for f, v in stats["classes"].items()} == dict.fromkeys(FOLDERS, 2)
    listed = dataset_classes(conditional)  # ldmkit.json `dataset.classes`, printed by `model info`
    assert {c["class"]: c["prompt"] for c in listed} == expected
    DataSection(path=str(root), class_template=template)  # the recipe accepts the same template


def test_class_conditional_uses_the_rule_even_when_captions_came_from_elsewhere(tmp_path):
    """A metadata.jsonl dataset with a `class` column: class_conditional replaces its captions by the rule."""
    from ldmkit.training.run_data import with_class_captions

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "someone smiling",
                                                         "class": "mahesh_babu"}) + "\n")
    dataset = CaptionDataset.open(tmp_path)
    assert dataset[0].captions == ("someone smiling",)
    assert with_class_captions(dataset, CLASS_TEMPLATE)[0].captions == ("a photo of mahesh babu",)


def test_data_stats_cli_prints_each_class_with_its_prompt(tmp_path, capsys):
    from ldmkit.cli import main

    root = person_folders(tmp_path / "faces")
    assert main(["data", "stats", str(root)]) == 0
    out = capsys.readouterr().out
    assert "class mahesh_babu: 2 images, caption 'a photo of mahesh babu'" in out
    assert "class allu__arjun : 2 images, caption 'a photo of allu arjun'" in out
    assert main(["data", "stats", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"]["ram charan"] == {"images": 2, "caption": "a photo of ram charan"}
