"""Issue 12 point 8: a wrong data.path never trains on something else.

A path that does not exist is a one-line error (nothing is built there); `data.builtin` builds only when
asked for, and an existing folder must then be that very build; the trainer prints a dataset summary
before step 1; ldmkit.json records the data actually used (a Flickr8k run says flickr8k, not shapes).
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.errors import DataError, UsageError
from ldmkit.training.recipes import DataSection
from ldmkit.training.run_data import data_source_overrides, open_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["train.steps=1", "train.batch_size=4", "train.checkpoint_every=0", "train.progress_bar=false",
        "data.val_fraction=0.2"]


def flickr8k(root: Path, n: int = 6) -> Path:
    """Flickr8k's layout: Images/*.jpg and captions.txt (`image,caption`, several captions per image)."""
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(n):
        Image.new("RGB", (40, 30), (30 * i, 90, 200 - 20 * i)).save(root / "Images" / f"{i}.jpg")
        lines += [f"{i}.jpg,a dog number {i} runs", f"{i}.jpg,a brown dog on grass {i}"]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def cli(tmp_path, *sets, config="tiny.yaml", out="run"):
    args = ["train", "unet", "--config", str(CONFIGS / config), "--out", str(tmp_path / out)]
    return main(args + [a for s in (*FAST, *sets) for a in ("--set", s)])


@pytest.mark.slow
def test_a_mistyped_path_is_one_line_and_builds_nothing(tmp_path, capsys):
    typo = tmp_path / "flikr8k"
    assert cli(tmp_path, f"data.path={typo}") == 2  # tiny.yaml's data.builtin=shapes does not apply
    err = capsys.readouterr().err.strip()
    assert err == f"ldmkit: error: data.path {typo} does not exist (to build a built-in dataset there, set data.builtin)"
    assert not typo.exists() and not (tmp_path / "run" / "final").exists()


def test_builtin_options_without_builtin_are_refused(tmp_path, capsys):
    data = flickr8k(tmp_path / "flickr")
    assert cli(tmp_path, f"data.path={data}", "data.builtin_n=16") == 2
    assert "data.builtin_n would have no effect" in capsys.readouterr().err


def test_data_source_overrides_only_drop_what_the_path_replaces():
    base = {"data": {"builtin": "shapes", "builtin_n": 48, "builtin_seed": 1, "image_size": 32}, "train": {}}
    assert data_source_overrides(base, ["train.steps=2"]) is base
    assert data_source_overrides(base, ["data.path=x"])["data"] == {"image_size": 32}
    kept = data_source_overrides(base, ["data.path=x", "data.builtin=shapes"])
    assert kept["data"]["builtin_n"] == 48
    with pytest.raises(UsageError, match="builtin_seed"):
        data_source_overrides(base, ["data.path=x", "data.builtin_seed=3"])


def test_open_dataset_checks_paths_and_builds(tmp_path, capsys):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(DataSection(path=str(tmp_path / "nope")), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        open_dataset(DataSection(path=str(tmp_path / "empty")), tmp_path)
    flickr = flickr8k(tmp_path / "flickr")
    with pytest.raises(DataError, match=r"data.builtin=shapes but .* holds no built-in dataset.*data.builtin=null"):
        open_dataset(DataSection(path=str(flickr), builtin="shapes"), tmp_path)

    asked = DataSection(path=str(tmp_path / "built"), builtin="shapes", builtin_n=8, image_size=32)
    assert len(open_dataset(asked, tmp_path)) == 8  # asked for: built there
    assert len(open_dataset(asked, tmp_path)) == 8  # and reused (a shared dataset, a resumed run)
    for other in (dict(builtin_n=9), dict(builtin_seed=1), dict(image_size=64)):
        changed = DataSection(**{**asked.__dict__, **other})
        with pytest.raises(DataError, match="another build of shapes"):
            open_dataset(changed, tmp_path)
    with pytest.raises(DataError, match="holds a build of 'shapes'"):
        open_dataset(DataSection(path=str(tmp_path / "built"), builtin="emoji", image_size=32), tmp_path)
    err = capsys.readouterr().err
    assert "format imagefolder, built-in shapes (seed 0, 32 px)" in err and "images 8, captions" in err


@pytest.mark.slow
def test_flickr_run_records_flickr_and_prints_a_summary(tmp_path, capsys):
    data = flickr8k(tmp_path / "flickr")
    assert cli(tmp_path, f"data.path={data}") == 0  # tiny.yaml names builtin shapes; the path replaces it
    err = capsys.readouterr().err
    summary = err[err.index("data: "):].splitlines()[:4]
    assert summary == [f"data: {data.resolve()}", "  format flickr8k, your data",
                       "  images 6, captions 12, bad 0", summary[3]]
    assert summary[3].startswith("  splits: train ") and "val " in summary[3] and "test 0" in summary[3]
    meta = json.loads((tmp_path / "run" / "final" / "ldmkit.json").read_text())
    assert meta["training"]["data"]["builtin"] is None and meta["training"]["data"]["path"] == str(data)
    recorded = meta["dataset"]
    assert recorded["format"] == "flickr8k" and recorded["builtin"] is None
    assert (recorded["images"], recorded["captions"], recorded["bad"]) == (6, 12, {})
    assert sum(recorded["splits"].values()) == 6 and "classes" not in recorded
    assert not (tmp_path / "run" / "dataset").exists()
