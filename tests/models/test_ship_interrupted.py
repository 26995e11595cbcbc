"""`model ship` never loses the earlier ship: interrupted mid-build or between its two renames, the old
folder is (put back) in place; ship records SHA-256 per file, and a recipe's ship/train stage whose result
does not verify is refused, not redone over what is there."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.models import build_components, save_components
from ldmkit.models import shipping
from ldmkit.models.shipping import SHIPPED, ShipSpec, ship_model, verify_ship
from ldmkit.workflows.stages import Stage, run_stages


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("ship-int-src")
    torch.manual_seed(0)
    save_components(build_components("tiny", seed=5), root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def first_ship(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship-int-first") / "default_model"
    ship_model(ShipSpec(source=model, out=out, name="first"))
    return out


@pytest.fixture()
def shipped(first_ship, tmp_path):
    """A copy of one real ship, for each test to damage or interrupt."""
    out = tmp_path / "pkg" / "default_model"
    shutil.copytree(first_ship, out)
    return out


def test_ship_records_sha256_and_verify_notices_a_bit_flip(shipped):
    record = json.loads((shipped / "ldmkit.json").read_text())[SHIPPED]
    assert "unet/diffusion_pytorch_model.safetensors" in record["sha256"]
    assert verify_ship(shipped) is None
    weights = shipped / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    assert "unet/diffusion_pytorch_model.safetensors: SHA-256 differs" in verify_ship(shipped)


def test_interrupted_ship_leaves_the_old_folder_intact(model, shipped, monkeypatch):
    before = _snapshot(shipped)

    def stop(tmp):
        assert any(tmp.iterdir())  # interrupted with a half-checked new folder on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(shipping, "_check_loads", stop)
    with pytest.raises(KeyboardInterrupt):
        ship_model(ShipSpec(source=model, out=shipped, name="second", replace=True))
    assert _snapshot(shipped) == before
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["default_model"]  # no temporary folder left


def test_ship_killed_between_the_renames_is_put_back(model, shipped, monkeypatch):
    before = _snapshot(shipped)
    shipped.rename(shipped.with_name(f".{shipped.name}.old-4242"))  # what kill -9 between the renames leaves
    stale = shipped.with_name(f".{shipped.name}.shipping-999999999")  # a killed ship's half-built folder
    (stale / "unet").mkdir(parents=True)
    lines = []

    def fail(*args):
        raise UsageError("stop here")

    monkeypatch.setattr(shipping, "_build", fail)
    with pytest.raises(UsageError, match="stop here"):
        ship_model(ShipSpec(source=model, out=shipped, name="second", replace=True), log=lines.append)
    assert _snapshot(shipped) == before and any("put back" in line for line in lines)
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["default_model"]


def test_recipe_refuses_a_ship_stage_that_does_not_verify(shipped):
    stage = Stage("default_model", "ship", None)
    assert stage.finished(shipped.parent)
    (shipped / "vae" / "config.json").write_text("{}")
    before = _snapshot(shipped)
    with pytest.raises(UsageError, match="does not verify .*vae/config.json: SHA-256 differs"):
        stage.finished(shipped.parent)
    assert _snapshot(shipped) == before


def test_recipe_refuses_to_train_into_a_folder_of_user_files(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("train: {steps: 1}\n")
    stages = tmp_path / "stages.yaml"
    stages.write_text("stages:\n  - {name: unet, trainer: unet, config: tiny.yaml}\n")
    mine = tmp_path / "runs" / "unet" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    with pytest.raises(UsageError, match="holds files but no training run"):
        run_stages(stages, tmp_path / "runs", log=lambda line: None)
    assert sorted(p.name for p in mine.parent.iterdir()) == ["notes.txt"]


def test_a_ship_from_before_hashes_is_checked_by_total_size(shipped):
    meta_file = shipped / "ldmkit.json"
    meta = json.loads(meta_file.read_text())
    del meta[SHIPPED]["sha256"]
    meta_file.write_text(json.dumps(meta))
    assert verify_ship(shipped) is None
    config = shipped / "vae" / "config.json"
    config.write_text(config.read_text() + " ")
    assert "files add up to" in verify_ship(shipped)
