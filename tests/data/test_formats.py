"""Every caption format read from small, realistic fixtures written here (layouts of the real distributions)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.formats import detect_format
from ldmkit.errors import DataError, UsageError

FLICKR8K = {
    "1000268201_693b08cb0e.jpg": [
        "A child in a pink dress is climbing up a set of stairs in an entry way .",
        "A girl going into a wooden building .",
        "A little girl climbing into a wooden playhouse .",
        "A little girl climbing the stairs to her playhouse .",
        "A little girl in a pink dress going into a wooden cabin .",
    ],
    "1001773457_577c3a7d70.jpg": [
        "A black dog and a spotted dog are fighting",
        "A black dog and a tri-colored dog playing with each other on the road .",
        "A black dog and a white dog with brown spots are staring at each other in the street .",
        "Two dogs of different breeds looking at each other on the road .",
        "Two dogs on pavement moving toward each other , one black and one white .",
    ],
    "1002674143_1b742ab4b8.jpg": [
        "A little girl covered in paint sits in front of a painted rainbow with her hands in a bowl .",
        "A little girl is sitting in front of a large painted rainbow .",
        "A small girl in the grass plays with fingerpaints in front of a white canvas with a rainbow on it .",
        "There is a girl with pigtails sitting in front of a rainbow painting .",
        "Young girl with pigtails painting outside in the grass .",
    ],
}


def write_image(path: Path, size=(32, 24), colour=(200, 30, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def csv_quote(text: str) -> str:
    return f'"{text}"' if "," in text else text


def as_dict(dataset) -> dict:
    return {s.image_id: (s.captions, s.labels) for s in dataset}


def test_flickr8k_kaggle_captions_txt(tmp_path):
    for name in FLICKR8K:
        write_image(tmp_path / "Images" / name)
    lines = ["image,caption"] + [f"{n},{csv_quote(c)}" for n, caps in FLICKR8K.items() for c in caps]
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "flickr8k"
    assert {i: caps for i, (caps, _) in as_dict(ds).items()} == {n: tuple(c) for n, c in FLICKR8K.items()}
    assert all(s.path.parent == tmp_path / "Images" for s in ds)
    assert ds.report.counts() == {}


def test_flickr8k_original_token_file_in_subfolders(tmp_path):
    for name in FLICKR8K:
        write_image(tmp_path / "Flicker8k_Dataset" / name)
    lines = [f"{n}#{i}\t{c}" for n, caps in FLICKR8K.items() for i, c in enumerate(caps)]
    lines.insert(3, "this line has no tab")
    text_dir = tmp_path / "Flickr8k_text"
    text_dir.mkdir()
    (text_dir / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "flickr8k" and len(ds) == 3 and ds.num_captions() == 15
    assert ds.report.counts() == {"malformed_line": 1}
    example = ds.report.examples["malformed_line"][0]
    assert (example.file, example.line) == ("Flickr8k_text/Flickr8k.token.txt", 4)


FLICKR30K = {
    "1000092795.jpg": ["Two young guys with shaggy hair look at their hands while hanging out in the yard .",
                       "Two young , White males are outside near many bushes .",
                       "Two men in green shirts are standing in a yard ."],
    "10002456.jpg": ["Several men in hard hats are operating a giant pulley system .",
                     "Workers look down from up above on a piece of equipment ."],
}


def test_flickr30k_results_csv_pipe_separated(tmp_path):
    images = tmp_path / "flickr30k_images" / "flickr30k_images"
    for name in FLICKR30K:
        write_image(images / name)
    lines = ["image_name| comment_number| comment"]
    lines += [f"{n}| {i}| {c}" for n, caps in FLICKR30K.items() for i, c in enumerate(caps)]
    lines.append("2199200615.jpg| 4 A dog runs across the grass .")  # the real file's broken line
    (tmp_path / "flickr30k_images" / "results.csv").write_text("\n".join(lines) + "\n")
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "flickr30k"
    assert {i: caps for i, (caps, _) in as_dict(ds).items()} == {n: tuple(c) for n, c in FLICKR30K.items()}
    assert ds.report.counts() == {"malformed_line": 1}
    assert ds.report.examples["malformed_line"][0].line == len(lines)


def test_flickr30k_token_file(tmp_path):
    for name in FLICKR30K:
        write_image(tmp_path / "flickr30k-images" / name)
    lines = [f"{n}#{i}\t{c}" for n, caps in FLICKR30K.items() for i, c in enumerate(caps)]
    (tmp_path / "results_20130124.token").write_text("\n".join(lines) + "\n")
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "flickr30k" and ds.num_captions() == 5 and ds.report.counts() == {}


def coco_json(images: dict[int, str], captions: list[tuple[int, str]]) -> dict:
    return {
        "info": {"description": "COCO 2014 Dataset"}, "licenses": [],
        "images": [{"license": 3, "file_name": f, "height": 24, "width": 32, "id": i} for i, f in images.items()],
        "annotations": [{"image_id": i, "id": 1000 + k, "caption": c} for k, (i, c) in enumerate(captions)],
    }


def test_coco_captions_json(tmp_path):
    images = {391895: "COCO_val2014_000000391895.jpg", 522418: "COCO_val2014_000000522418.jpg",
              184613: "COCO_val2014_000000184613.jpg"}
    for name in images.values():
        write_image(tmp_path / "val2014" / name)
    captions = [(391895, "A man with a red helmet on a small moped on a dirt road. "),
                (522418, "A woman wearing a net on her head cutting a cake. "),
                (391895, "Man riding a motor bike on a dirt road on the countryside."),
                (184613, "A child holding a flowered umbrella and petting a yak."),
                (522418, "A woman cutting a large white sheet cake."),
                (999999, "refers to no image")]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2014.json").write_text(json.dumps(coco_json(images, captions)))
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "coco" and len(ds) == 3
    sample = ds[[s.image_id for s in ds].index("COCO_val2014_000000391895.jpg")]
    assert sample.captions == ("A man with a red helmet on a small moped on a dirt road.",
                               "Man riding a motor bike on a dirt road on the countryside.")
    assert sample.labels == {"coco_id": "391895"}
    assert ds.report.counts() == {"malformed_line": 1}
    # the same file given directly as the root
    direct = CaptionDataset.open(tmp_path / "annotations" / "captions_val2014.json")
    assert as_dict(direct) == as_dict(ds)


def test_imagefolder_jsonl_lists_and_labels(tmp_path):
    write_image(tmp_path / "images" / "00000.png")
    write_image(tmp_path / "images" / "00001.png")
    rows = [{"file_name": "images/00000.png", "text": ["a red circle", "a circle that is red"],
             "shape": "circle", "count": 1},
            {"file_name": "images/00001.png", "text": "a blue square", "shape": "square", "big": True}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = CaptionDataset.open(tmp_path)
    assert ds.format == "imagefolder"
    assert as_dict(ds) == {
        "images/00000.png": (("a red circle", "a circle that is red"), {"shape": "circle", "count": "1"}),
        "images/00001.png": (("a blue square",), {"shape": "square", "big": "true"}),
    }


def test_imagefolder_csv_caption_column_and_json_list_cell(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.jpg")
    (tmp_path / "metadata.csv").write_text(
        'file_name,caption,colour\na.jpg,"a cat, sleeping",grey\n'
        'b.jpg,"[""a dog"", ""a puppy""]",brown\n')
    ds = CaptionDataset.open(tmp_path)
    assert as_dict(ds) == {"a.jpg": (("a cat, sleeping",), {"colour": "grey"}),
                           "b.jpg": (("a dog", "a puppy"), {"colour": "brown"})}


def test_imagefolder_refuses_paths_outside_the_folder(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "ok.png")
    write_image(tmp_path / "secret.png")
    rows = [{"file_name": "ok.png", "text": "fine"}, {"file_name": "../secret.png", "text": "escape"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = CaptionDataset.open(root)
    assert [s.image_id for s in ds] == ["ok.png"]
    assert ds.report.counts() == {"malformed_line": 1}
    assert ds.report.examples["malformed_line"][0].line == 2


def test_sidecar_txt_and_caption_files(tmp_path):
    write_image(tmp_path / "photo.jpg")
    (tmp_path / "photo.txt").write_text("a dog on a beach\n\na dog running by the sea\n")
    write_image(tmp_path / "nested" / "pic.png")
    (tmp_path / "nested" / "pic.caption").write_text("a bowl of fruit")
    write_image(tmp_path / "lonely.png")  # no caption file
    (tmp_path / "orphan.txt").write_text("a caption without an image")
    ds = CaptionDataset.open(tmp_path, max_bad_fraction=0.5)
    assert ds.format == "sidecar"
    assert as_dict(ds) == {"nested/pic.png": (("a bowl of fruit",), {}),
                           "photo.jpg": (("a dog on a beach", "a dog running by the sea"), {})}
    assert ds.report.counts() == {"missing_image": 1, "no_caption": 1}


def test_class_folders_with_template(tmp_path):
    write_image(tmp_path / "golden_retriever" / "1.jpg")
    write_image(tmp_path / "golden_retriever" / "2.jpg")
    write_image(tmp_path / "tabby cat" / "x.png")
    (tmp_path / "tabby cat" / "Thumbs.db").write_bytes(b"junk")  # ignored, as the OS put it there
    ds = CaptionDataset.open(tmp_path, class_template="a picture of a {}")
    assert ds.format == "classfolders"
    assert as_dict(ds) == {
        "golden_retriever/1.jpg": (("a picture of a golden retriever",), {"class": "golden_retriever"}),
        "golden_retriever/2.jpg": (("a picture of a golden retriever",), {"class": "golden_retriever"}),
        "tabby cat/x.png": (("a picture of a tabby cat",), {"class": "tabby cat"}),
    }
    assert CaptionDataset.open(tmp_path)[0].captions == ("a photo of golden retriever",)


def test_forced_format_overrides_detection(tmp_path):
    write_image(tmp_path / "dogs" / "1.jpg")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "dogs/1.jpg", "text": "a dog"}) + "\n")
    assert detect_format(tmp_path) == "imagefolder"
    forced = CaptionDataset.open(tmp_path, format="classfolders")
    assert forced.format == "classfolders" and forced[0].captions == ("a photo of dogs",)
    with pytest.raises(DataError, match="Flickr30k"):
        CaptionDataset.open(tmp_path, format="flickr30k")
    with pytest.raises(UsageError, match="imagefolder"):
        CaptionDataset.open(tmp_path, format="parquet")


def test_undetectable_folder_says_what_is_expected(tmp_path):
    write_image(tmp_path / "a.png")
    with pytest.raises(DataError, match="metadata.jsonl"):
        CaptionDataset.open(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        CaptionDataset.open(tmp_path / "nope")


def test_builtin_shapes_output_reads_back(tmp_path):
    """The other engineer's built-in datasets are written for this reader: check the interface."""
    from ldmkit.data.builtin import build_dataset

    card = build_dataset("shapes", tmp_path / "shapes", n=6, seed=0, size=32)
    ds = CaptionDataset.open(tmp_path / "shapes")
    assert ds.format == "imagefolder" and len(ds) == card["images"] == 6
    assert ds.num_captions() == card["captions"]
    assert set(card["label_columns"]) <= set(ds[0].labels)
    assert ds.report.counts() == {}
