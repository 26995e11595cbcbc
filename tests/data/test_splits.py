"""Splits by image-id hash: deterministic, stable when images are added, never split across captions."""

import json

import pytest
from PIL import Image

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.splits import SPLITS, SplitSpec, split_ids, split_of, unit_hash
from ldmkit.errors import UsageError


def ids(n, prefix="img"):
    return [f"{prefix}_{i:05d}.jpg" for i in range(n)]


def test_fractions_match_within_binomial_noise():
    spec = SplitSpec(val=0.1, test=0.2)
    n = 20000
    counts = {k: len(v) for k, v in split_ids(ids(n), spec).items()}
    for name, p in (("val", 0.1), ("test", 0.2), ("train", 0.7)):
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(counts[name] - n * p) < 5 * sd, (name, counts)


def test_adding_images_never_moves_existing_ones():
    spec = SplitSpec()
    before = {i: split_of(i, spec) for i in ids(500)}
    grown = split_ids(ids(2000) + ids(300, prefix="new"), spec)
    after = {i: name for name, members in grown.items() for i in members}
    assert all(after[i] == before[i] for i in before)
    assert sum(len(v) for v in grown.values()) == len(after) == 2300  # no image in two splits


def test_independent_of_order_and_salt_changes_assignment():
    forward = split_ids(ids(300))
    backward = split_ids(list(reversed(ids(300))))
    assert {k: sorted(v) for k, v in forward.items()} == {k: sorted(v) for k, v in backward.items()}
    salted = {i: split_of(i, SplitSpec(val=0.5, test=0.0, salt="other")) for i in ids(300)}
    plain = {i: split_of(i, SplitSpec(val=0.5, test=0.0)) for i in ids(300)}
    assert salted != plain
    assert 0.0 <= unit_hash("x") < 1.0 and unit_hash("x") == unit_hash("x")


def test_dataset_splits_keep_all_captions_of_an_image_together(tmp_path):
    rows = []
    for i in range(60):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
        rows += [{"file_name": f"{i}.png", "text": f"caption {k} of {i}"} for k in range(3)]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = CaptionDataset.open(tmp_path)
    spec = SplitSpec(val=0.2, test=0.2)
    parts = {name: ds.split(name, spec) for name in SPLITS}
    seen = [s.image_id for p in parts.values() for s in p]
    assert sorted(seen) == sorted(s.image_id for s in ds)
    assert all(len(s.captions) == 3 for p in parts.values() for s in p)
    assert all(split_of(s.image_id, spec) == name for name, p in parts.items() for s in p)
    with pytest.raises(UsageError):
        ds.split("validation")


def test_bad_fractions_refused():
    with pytest.raises(UsageError):
        SplitSpec(val=0.6, test=0.6)
    with pytest.raises(UsageError):
        SplitSpec(val=-0.1)
