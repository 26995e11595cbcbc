"""Mixtures of built-in datasets (`emoji+avatars`): one readable folder, labels say the source, safe rebuilds."""

import json

import pytest

from ldmkit.data import CaptionDataset
from ldmkit.data.builtin import build_dataset
from ldmkit.errors import UsageError


def test_mixture_is_one_dataset_with_each_part_intact(tmp_path):
    out = tmp_path / "mix"
    card = build_dataset("shapes+avatars", out, n={"shapes": 5, "avatars": 4}, seed=3, size=32)
    alone = tmp_path / "avatars"
    build_dataset("avatars", alone, n=4, seed=3, size=32)
    data = CaptionDataset.open(out)
    assert card["images"] == len(data) == 9
    by_source = {}
    for s in data.samples:
        by_source.setdefault(s.labels["source"], []).append(s)
    assert {k: len(v) for k, v in by_source.items()} == {"shapes": 5, "avatars": 4}
    # the avatars part is exactly the stand-alone build: same pixels, same captions, same labels
    rows = {json.loads(line)["file_name"]: json.loads(line) for line in (alone / "metadata.jsonl").read_text().splitlines()}
    for s in by_source["avatars"]:
        rel = s.path.relative_to(out / "avatars").as_posix()
        assert s.path.read_bytes() == (alone / rel).read_bytes()
        assert list(s.captions) == rows[rel]["text"]
        assert all(s.labels[k] == v for k, v in rows[rel].items() if k not in ("file_name", "text"))
        assert s.labels["color"] == ""  # a shapes column does not apply to avatars
    assert set(card["label_columns"]) == {"source"} | set(by_source["shapes"][0].labels) - {"source"}


def test_mixture_rebuild_replaces_it_but_refuses_foreign_folders(tmp_path):
    out = tmp_path / "mix"
    build_dataset("shapes+avatars", out, n=3, seed=0, size=32)
    before = (out / "metadata.jsonl").read_bytes()
    build_dataset("shapes+avatars", out, n=3, seed=0, size=32)
    assert (out / "metadata.jsonl").read_bytes() == before
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        build_dataset("shapes+avatars", out, n=3, seed=0, size=32)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="holds a build of 'shapes\\+avatars', not 'avatars\\+shapes'"):
        build_dataset("avatars+shapes", out, n=3, seed=0, size=32)


@pytest.mark.parametrize("name,n,message", [
    ("shapes+shapes", None, "two or more different"),
    ("shapes+cats", None, "two or more different"),
    ("shapes+avatars", {"emoji": 3}, "mapping from some of shapes, avatars"),
    ("shapes+avatars", {"shapes": 0}, "positive integer"),
])
def test_bad_mixtures_are_refused(tmp_path, name, n, message):
    with pytest.raises(UsageError, match=message):
        build_dataset(name, tmp_path / "m", n=n, seed=0, size=32)
    assert not (tmp_path / "m").exists()


def test_cli_builds_a_mixture_with_per_part_counts(tmp_path, capsys):
    from ldmkit.cli import main

    assert main(["data", "build", "shapes+avatars", str(tmp_path / "m"), "--n", "shapes=3", "--n", "avatars=2",
                 "--size", "32"]) == 0
    assert "5 images" in capsys.readouterr().out
    assert main(["data", "build", "shapes+avatars", str(tmp_path / "x"), "--n", "3", "--n", "avatars"]) == 2
    assert "PART=N" in capsys.readouterr().err
