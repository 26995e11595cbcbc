"""`ldmkit train recipe`: stages in order, {stage} placeholders, finished stages skipped, bad files refused."""

from pathlib import Path

import pytest

from ldmkit.cli import main
from ldmkit.errors import UsageError
from ldmkit.workflows.stages import load_stages

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["train.steps=2", "train.checkpoint_every=1", "train.validate_every=0", "train.batch_size=4",
        "data.builtin_n=24"]


def write_stages(tmp_path):
    text = "stages:\n" + "".join(
        f"  - name: {name}\n    trainer: {trainer}\n    config: {CONFIGS / config}\n    set: {sets + FAST}\n"
        for name, trainer, config, sets in (
            ("vae", "vae", "vae-shapes.yaml", ["data.image_size=32"]),
            ("unet", "unet", "tiny.yaml", ["model.vae_from={vae}"]),
        ))
    path = tmp_path / "stages.yaml"
    path.write_text(text)
    return path


def test_stages_run_in_order_then_skip(tmp_path, capsys):
    stages = write_stages(tmp_path)
    assert main(["train", "recipe", str(stages), "--out", str(tmp_path / "runs")]) == 0
    assert '"vae": "trained", "unet": "trained"' in capsys.readouterr().out
    recipe = (tmp_path / "runs" / "unet" / "config.yaml").read_text()
    assert str(tmp_path / "runs" / "vae" / "final") in recipe  # {vae} was filled in
    final = tmp_path / "runs" / "unet" / "final" / "unet" / "diffusion_pytorch_model.safetensors"
    before = final.stat().st_mtime_ns
    assert main(["train", "recipe", str(stages), "--out", str(tmp_path / "runs")]) == 0
    assert '"vae": "skipped", "unet": "skipped"' in capsys.readouterr().out
    assert final.stat().st_mtime_ns == before


def test_unfinished_stage_is_resumed_not_restarted(tmp_path, capsys):
    stages = write_stages(tmp_path)
    assert main(["train", "recipe", str(stages), "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    import shutil

    shutil.rmtree(tmp_path / "runs" / "unet" / "final")  # as if stopped after its last checkpoint
    assert main(["train", "recipe", str(stages), "--out", str(tmp_path / "runs")]) == 0
    assert '"unet": "resumed"' in capsys.readouterr().out
    assert (tmp_path / "runs" / "unet" / "final").is_dir()


def test_out_placeholder_shares_one_dataset_and_set_applies_to_every_stage(tmp_path, capsys):
    text = "stages:\n" + "".join(
        f"  - {{name: {name}, trainer: {trainer}, config: {CONFIGS / config}, set: {sets}}}\n"
        for name, trainer, config, sets in (
            ("vae", "vae", "vae-shapes.yaml", ["data.path={out}/shared", "data.builtin=shapes"]),
            ("unet", "unet", "tiny.yaml", ["data.path={out}/shared", "data.builtin=shapes", "model.vae_from={vae}"]),
        ))
    stages = tmp_path / "stages.yaml"
    stages.write_text(text)
    out = tmp_path / "runs"
    args = ["train", "recipe", str(stages), "--out", str(out)] + [a for o in FAST for a in ("--set", o)]
    assert main(args + ["--set", "data.image_size=32"]) == 0
    assert '"vae": "trained", "unet": "trained"' in capsys.readouterr().out
    assert (out / "shared" / "dataset_card.json").is_file()  # built once, by the first stage
    assert not (out / "vae" / "dataset").exists() and not (out / "unet" / "dataset").exists()
    for stage in ("vae", "unet"):
        recipe = (out / stage / "config.yaml").read_text()
        assert str(out / "shared") in recipe and "steps: 2" in recipe  # {out} filled, --set applied


def test_stage_may_not_be_called_out(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"stages:\n  - {{name: out, trainer: unet, config: {CONFIGS / 'tiny.yaml'}}}\n")
    with pytest.raises(UsageError, match="reserved"):
        load_stages(path)


@pytest.mark.parametrize("text,message", [
    ("stages: []\n", "non-empty list"),
    ("stages:\n  - {name: a, trainer: gan, config: tiny.yaml}\n", "trainer 'gan'"),
    ("stages:\n  - {name: a, trainer: unet}\n", "missing keys ['config']"),
    ("stages:\n  - {name: a, trainer: unet, config: nope.yaml}\n", "does not exist"),
    ("stages:\n  - {name: a, trainer: unet, config: tiny.yaml, colour: red}\n", "unknown keys ['colour']"),
    ("stages:\n  - {name: a, trainer: unet, config: tiny.yaml, ship: {}}\n", "one of `trainer`, `ship` or `eval`"),
    ("stages:\n  - {name: a, ship: {colour: red}}\n", "unknown ship option 'colour'"),
    ("stages:\n  - {name: a, eval: {model: m, n: many}}\n", "eval option n='many' has the wrong type; expected int"),
    ("stages:\n  - {name: a, eval: {n: 4}}\n", "eval needs `model:`"),
    ("stages:\n  - {name: a, eval: {model: m}, set: [x=1]}\n", "unknown keys ['set']"),
    ("stages:\n  - {name: a, eval: [1]}\n", "must be a mapping"),
    ("stages:\n  - {name: a, trainer: ship, config: tiny.yaml}\n", "instead of `trainer: ship`"),
])
def test_bad_stages_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("tiny.yaml", str(CONFIGS / "tiny.yaml")))
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_stages(path)


def test_placeholder_must_name_an_earlier_stage(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"stages:\n  - {{name: unet, trainer: unet, config: {CONFIGS / 'tiny.yaml'}, "
                    f"set: ['model.vae_from={{vae}}']}}\n")
    from ldmkit.workflows.stages import run_stages

    with pytest.raises(UsageError, match="not an earlier stage"):
        run_stages(path, tmp_path / "r")
    assert main(["train", "recipe", str(path), "--out", str(tmp_path / "r")]) == 2


@pytest.mark.parametrize("name", ["shapes-pipeline.yaml", "emoji-pipeline.yaml", "avatars-pipeline.yaml", "default.yaml",
                                  "clip-emoji-to-avatars.yaml"])
def test_shipped_stages_files_load_with_their_recipes(name):
    from ldmkit.config import load_recipe
    from ldmkit.training.recipes import RECIPES
    from ldmkit.workflows.stages import fill_placeholders

    stages = load_stages(CONFIGS / name)
    finals = {}
    for s in stages:
        if s.kind != "train":
            finals[s.name] = s.result(Path("/some/out"))
            continue
        load_recipe(s.config, RECIPES[s.trainer], fill_placeholders(s.overrides, finals, s.name, Path("/some/out")))
        finals[s.name] = Path("/some/out") / s.name / "final"


def test_ship_and_eval_stages_assemble_and_measure_then_skip(tmp_path, capsys):
    """A training stage, then a ship stage (one fp16 model folder) and an eval stage on it; a stopped eval
    (its .partial folder left behind) is redone, finished ones are skipped."""
    path = tmp_path / "stages.yaml"
    path.write_text(
        "stages:\n"
        f"  - {{name: unet, trainer: unet, config: {CONFIGS / 'tiny.yaml'}, set: {FAST + ['data.path={out}/data', 'data.builtin=shapes']}}}\n"
        "  - {name: model, ship: {sampler: ddim, steps: 3, guidance: 2.5}}\n"
        "  - {name: eval, eval: {model: '{model}', data: '{out}/data', n: 4, split: train, n_boot: 20}}\n")
    out = tmp_path / "runs"
    assert main(["train", "recipe", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert '"unet": "trained", "model": "shipped", "eval": "evaluated"' in captured.out
    assert "stage eval (eval): evaluated in" in captured.err and "3 of 3 stages in" in captured.err
    import json

    meta = json.loads((out / "model" / "ldmkit.json").read_text())
    assert meta["sampling"]["steps"] == 3 and "stages:" in meta["recipe"]["text"]
    from ldmkit.models.shipping import platform_key
    from ldmkit.pipeline.reference import reference_png_sha256

    reference = meta["reference_image"]  # recorded as `ldmkit model ship` records it
    assert reference["sha256"][platform_key()] == reference_png_sha256(out / "model", reference["prompt"],
                                                                       reference["seed"])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["data"]["root"] == str(out / "data") and metrics["settings"]["model"] == str(out / "model")
    assert metrics["settings"]["out"] == str(out / "eval") and not (out / "eval.partial").exists()

    import shutil

    (out / "eval").rename(out / "eval.partial")  # as if stopped before the rename
    shutil.rmtree(out / "model")
    assert main(["train", "recipe", str(path), "--out", str(out)]) == 0
    assert '"unet": "skipped", "model": "shipped", "eval": "evaluated"' in capsys.readouterr().out
    assert (out / "eval" / "metrics.json").is_file() and not (out / "eval.partial").exists()
    assert main(["train", "recipe", str(path), "--out", str(out)]) == 0
    assert '"unet": "skipped", "model": "skipped", "eval": "skipped"' in capsys.readouterr().out


def test_eval_stage_never_overwrites_a_foreign_folder(tmp_path):
    from ldmkit.workflows.stages import run_stages

    path = tmp_path / "stages.yaml"
    path.write_text("stages:\n  - {name: eval, eval: {model: somewhere}}\n")
    (tmp_path / "r" / "eval").mkdir(parents=True)
    (tmp_path / "r" / "eval" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds no metrics.json"):
        run_stages(path, tmp_path / "r")
    assert (tmp_path / "r" / "eval" / "notes.txt").read_text() == "mine"


def test_eval_stage_options_are_the_eval_settings():
    """An eval stage takes every EvalSettings field but `out` (the stage's own folder), and nothing else."""
    import dataclasses

    from ldmkit.evaluation.run import EvalSettings
    from ldmkit.workflows.stages import EVAL_OPTIONS

    assert set(EVAL_OPTIONS) == {f.name for f in dataclasses.fields(EvalSettings)} - {"out"}


def test_set_reaches_only_the_stages_whose_recipe_has_that_section(tmp_path, capsys):
    text = "stages:\n" + "".join(
        f"  - {{name: {name}, trainer: {trainer}, config: {CONFIGS / config}, set: {sets + FAST}}}\n"
        for name, trainer, config, sets in (
            ("vae", "vae", "vae-shapes.yaml", ["data.image_size=32"]),
            ("attributes", "attributes", "attributes-avatars.yaml", []),
        ))
    stages = tmp_path / "stages.yaml"
    stages.write_text(text)
    out = tmp_path / "runs"
    assert main(["train", "recipe", str(stages), "--out", str(out), "--set", "modle.latent_channels=8"]) == 2
    assert "no training stage's recipe has a 'modle' section; sections: attributes" in capsys.readouterr().err
    assert not (out / "vae").exists()  # refused before any stage ran
    assert main(["train", "recipe", str(stages), "--out", str(out), "--set", "model.latent_channels=8"]) == 0
    assert '"vae": "trained", "attributes": "trained"' in capsys.readouterr().out
    assert "latent_channels: 8" in (out / "vae" / "config.yaml").read_text()
    assert "latent_channels" not in (out / "attributes" / "config.yaml").read_text()
