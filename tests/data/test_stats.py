"""Dataset statistics against counts computed directly from the fixture, and the plots written."""

import json
from collections import Counter

from PIL import Image

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.splits import split_of
from ldmkit.data.stats import dataset_stats, stats_lines, write_stats

ROWS = [
    ("a.png", (32, 24), ["A red car", "a car that is red", "red car parked"], {"colour": "red"}),
    ("b.png", (24, 32), ["a blue boat on the sea"], {"colour": "blue"}),
    ("c.png", (32, 24), ["a red kite", "the kite's tail"], {"colour": "red"}),
    ("d.png", (30, 30), ["an empty room"], {"colour": "white"}),
]


def make(tmp_path):
    lines = []
    for name, size, captions, labels in ROWS:
        Image.new("RGB", size, (90, 20, 20)).save(tmp_path / name)
        lines.append(json.dumps({"file_name": name, "text": captions, **labels}))
    (tmp_path / "zero.png").write_bytes(b"")
    lines.append(json.dumps({"file_name": "zero.png", "text": "nothing"}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return CaptionDataset.inspect(tmp_path)


def test_stats_match_direct_counts(tmp_path):
    stats = dataset_stats(make(tmp_path))
    captions = [c for _, _, caps, _ in ROWS for c in caps]
    words = [w.lower() for c in captions for w in c.split()]
    assert stats["images"] == len(ROWS) and stats["captions"] == len(captions)
    assert stats["bad"] == {"zero_byte": 1} and stats["bad_fraction"] == 1 / (len(ROWS) + 1)
    per_image = Counter(len(caps) for _, _, caps, _ in ROWS)
    assert stats["captions_per_image"]["histogram"] == {str(k): v for k, v in sorted(per_image.items())}
    lengths = [len(c.split()) for c in captions]
    assert stats["caption_words"]["min"] == min(lengths) and stats["caption_words"]["max"] == max(lengths)
    assert abs(stats["caption_words"]["mean"] - sum(lengths) / len(lengths)) < 1e-3
    assert stats["vocabulary"]["size"] == len(set(words))  # "kite's" stays one word
    assert dict(stats["vocabulary"]["top"]) == dict(Counter(words))  # fewer words than TOP_WORDS
    sizes = Counter(f"{w}x{h}" for _, (w, h), _, _ in ROWS)
    assert dict(stats["image_sizes"]["most_common"]) == dict(sizes)
    assert stats["image_sizes"]["aspect"] == {"landscape (>1.25)": 2, "portrait (<0.8)": 1,
                                              "square (0.8-1.25)": 1}
    assert stats["labels"]["colour"]["top"][0] == ["red", 2] and stats["labels"]["colour"]["distinct"] == 3
    expected_splits = Counter(split_of(name) for name, _, _, _ in ROWS)
    assert stats["splits"] == {k: expected_splits.get(k, 0) for k in ("train", "val", "test")}
    assert any(line.startswith("images: 4") for line in stats_lines(stats))


def test_write_stats_plots(tmp_path):
    (tmp_path / "ds").mkdir()
    stats = dataset_stats(make(tmp_path / "ds"))
    written = write_stats(stats, tmp_path / "out")
    names = {p.name for p in written}
    assert {"stats.json", "captions_per_image.png", "caption_length.png", "top_words.png",
            "image_sizes.png", "bad_inputs.png"} == names
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    for path in written:
        if path.suffix == ".png":
            with Image.open(path) as img:
                assert img.width > 100 and img.height > 100
