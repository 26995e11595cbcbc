"""Issue 6: configs/default.yaml runs end to end at tiny scale (emoji + avatars -> VAE -> UNet -> CLIP),
the run ships as a package folder, and the shipped folder generates."""

from pathlib import Path

import pytest

from ldmkit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["data.builtin_n=12", "train.steps=2", "train.batch_size=4", "train.warmup_steps=0",
        "train.checkpoint_every=1", "train.validate_every=0", "train.progress_bar=false"]


@pytest.mark.slow
def test_default_recipe_runs_ships_and_generates(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "runs"
    args = ["train", "recipe", str(CONFIGS / "default.yaml"), "--out", str(out)]
    args += [a for o in TINY for a in ("--set", o)]
    assert main(args) == 0
    assert '"vae": "trained", "unet": "trained", "clip": "trained", "attributes": "trained"' in capsys.readouterr().out
    card = (out / "dataset" / "dataset_card.json").read_text()
    assert '"emoji+avatars"' in card  # one mixture dataset, shared by the three stages
    assert not any((out / stage / "dataset").exists() for stage in ("vae", "unet", "clip", "attributes"))
    assert main(args) == 0  # a second call finds every stage finished
    assert '"vae": "skipped", "unet": "skipped", "clip": "skipped", "attributes": "skipped"' in capsys.readouterr().out

    shipped = tmp_path / "pkg" / "default_model"
    assert main(["model", "ship", str(out), "--out", str(shipped), "--recipe", str(CONFIGS / "default.yaml"),
                 "--no-reference"]) == 0
    assert all((shipped / part).is_dir() for part in ("unet", "vae", "clip", "attributes"))
    capsys.readouterr()
    assert main(["generate", "a red heart", "--model", str(shipped), "--steps", "2", "--seed", "0",
                 "--out", str(tmp_path / "img"), "--quiet"]) == 0
    from PIL import Image

    (png,) = sorted((tmp_path / "img").glob("*.png"))
    assert Image.open(png).size == (64, 64)
