"""Issue 6: configs/default.yaml runs end to end at tiny scale (emoji + avatars -> VAE -> CLIP -> attribute
classifier -> UNet scored by both -> one model folder -> eval of avatars and emoji), the run ships as a package folder,
and the shipped folder generates."""

from pathlib import Path

import pytest

from ldmkit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["data.builtin_n=12", "train.steps=2", "train.batch_size=4", "train.warmup_steps=0",
        "train.checkpoint_every=1", "train.validate_every=2", "data.val_fraction=0.5", "train.progress_bar=false",
        "eval.split=train", "eval.n=4", "eval.steps=2", "eval.n_boot=20", "eval.sweep=guidance=1,3"]
TRAINED = '"vae": "trained", "clip": "trained", "attributes": "trained", "unet": "trained"'
EVALUATED = '"model": "shipped", "eval-avatars": "evaluated", "eval-emoji": "evaluated"'
SKIPPED = ('"vae": "skipped", "clip": "skipped", "attributes": "skipped", "unet": "skipped", "model": "skipped", '
           '"eval-avatars": "skipped", "eval-emoji": "skipped"')


@pytest.mark.slow
def test_default_recipe_runs_ships_and_generates(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "runs"
    args = ["train", "recipe", str(CONFIGS / "default.yaml"), "--out", str(out)]
    args += [a for o in TINY for a in ("--set", o)]
    assert main(args) == 0
    assert TRAINED + ", " + EVALUATED in capsys.readouterr().out
    card = (out / "dataset" / "dataset_card.json").read_text()
    assert '"emoji+avatars"' in card  # one mixture dataset, shared by the three stages
    assert not any((out / stage / "dataset").exists() for stage in ("vae", "unet", "clip", "attributes"))
    assert main(args) == 0  # a second call finds every stage finished
    assert SKIPPED in capsys.readouterr().out
    import json

    for part in ("avatars", "emoji"):  # each eval saw only its own rows, with the recipe's holdout rule
        metrics = json.loads((out / f"eval-{part}" / "metrics.json").read_text())
        assert metrics["settings"]["where"] == {"source": part} and len(metrics["conditions"]) == 2
    assert (out / "model" / "attributes").is_dir() and (out / "eval-avatars" / "report.html").is_file()
    # the UNet stage was scored at its validation by the recipe's own dual encoder and attribute classifier
    (row,) = [json.loads(line) for line in (out / "unet" / "eval.jsonl").read_text().splitlines()]
    assert row["step"] == 2 and row["samples"] == 8 and row["elapsed_s"] > 0
    assert 0 <= row["retrieval_top1"] <= 1 and row["prompts"] >= 2
    assert "attribute_images" in row  # 0: a 2-step classifier reads no attribute reliably (>= 95%)

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
