"""A recipe's time budget: each training stage gets a deadline, its share of what the budget has left;
OUT/budget.json keeps what every stage spent over every attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ldmkit.cli import main
from ldmkit.errors import UsageError
from ldmkit.training import time_budget, trainers
from ldmkit.workflows.budget import LEDGER, stage_deadline
from ldmkit.workflows.stages import Stage, load_stages

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["train.steps=2", "train.checkpoint_every=1", "train.validate_every=0", "train.batch_size=4",
        "data.builtin_n=24"]


def _stages_file(tmp_path, head: str = "budget_minutes: 30\n", shares=(1, 3)) -> Path:
    text = head + "stages:\n" + "".join(
        f"  - name: {name}\n    trainer: {trainer}\n    config: {CONFIGS / config}\n    set: {sets + FAST}\n"
        + (f"    share: {share}\n" if share is not None else "")
        for (name, trainer, config, sets), share in zip((
            ("vae", "vae", "vae-shapes.yaml", ["data.image_size=32"]),
            ("unet", "unet", "tiny.yaml", ["model.vae_from={vae}"]),
        ), shares))
    path = tmp_path / "stages.yaml"
    path.write_text(text)
    return path


def _stage(name: str, share: float) -> Stage:
    return Stage(name, "unet", CONFIGS / "tiny.yaml", share=share)


def test_each_stage_gets_its_share_of_what_is_left(monkeypatch):
    monkeypatch.setattr(time_budget, "now", lambda: 1000.0)
    vae, unet = _stage("vae", 1.0), _stage("unet", 3.0)
    lines = []
    assert stage_deadline(vae, [vae, unet], 10.0, {}, lines.append) == pytest.approx(1000.0 + 150.0)
    # the VAE overran (200 s of its 150): the UNet gets what is left, all of it
    assert stage_deadline(unet, [unet], 10.0, {"vae": 200.0}, lines.append) == pytest.approx(1000.0 + 400.0)
    assert "6.7 min of the 6.7 min the budget (10 min) has left" in lines[-1]
    with pytest.raises(UsageError, match=r"time budget \(10 min\) is spent: its training stages took 10.5 min"):
        stage_deadline(unet, [unet], 10.0, {"vae": 630.0}, lines.append)


def test_the_deadline_reaches_the_loop_and_the_ledger_adds_up_over_attempts(tmp_path, capsys, monkeypatch):
    deadlines = []
    train_task = trainers.train_task

    def spy(kind, recipe, run_dir, *, deadline=None):
        deadlines.append((kind, deadline))
        return train_task(kind, recipe, run_dir, deadline=deadline)

    monkeypatch.setattr(trainers, "train_task", spy)
    stages, out = _stages_file(tmp_path), tmp_path / "runs"
    before = time_budget.now()
    assert main(["train", "recipe", str(stages), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "stage vae: 7.5 min of the 30.0 min the budget (30 min) has left" in err
    assert [k for k, _ in deadlines] == ["vae", "unet"]
    assert before + 7.5 * 60 <= deadlines[0][1] <= time_budget.now() + 7.5 * 60
    spent = json.loads((out / LEDGER).read_text())["spent_s"]
    assert set(spent) == {"vae", "unet"} and all(v > 0 for v in spent.values())
    # an unfinished stage run again adds its new attempt to what it had spent
    import shutil

    shutil.rmtree(out / "unet" / "final")
    assert main(["train", "recipe", str(stages), "--out", str(out)]) == 0
    again = json.loads((out / LEDGER).read_text())["spent_s"]
    assert again["vae"] == spent["vae"] and again["unet"] > spent["unet"]
    assert deadlines[-1][0] == "unet" and deadlines[-1][1] is not None


def test_budget_minutes_zero_turns_the_files_budget_off(tmp_path, capsys, monkeypatch):
    seen = []
    train_task = trainers.train_task
    monkeypatch.setattr(trainers, "train_task", lambda kind, recipe, run_dir, *, deadline=None: (
        seen.append(deadline), train_task(kind, recipe, run_dir, deadline=deadline))[1])
    out = tmp_path / "runs"
    assert main(["train", "recipe", str(_stages_file(tmp_path)), "--out", str(out), "--budget-minutes", "0"]) == 0
    assert seen == [None, None] and not (out / LEDGER).exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_budget_minutes_is_one_line(tmp_path, capsys, value):
    code = main(["train", "recipe", str(_stages_file(tmp_path)), "--out", str(tmp_path / "r"),
                 "--budget-minutes", value])
    err = capsys.readouterr().err
    assert code == 2 and "--budget-minutes must be 0 (no budget)" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("head,shares,message", [
    ("", (1, 3), "`share` has no effect without `budget_minutes:`"),
    ("budget_minutes: -5\n", (None, None), "budget_minutes must be a number of minutes > 0 and <= 527040, got -5"),
    ("budget_minutes: soon\n", (None, None), "budget_minutes must be a number of minutes > 0"),
    ("budget_minutes: .nan\n", (None, None), "budget_minutes must be a number of minutes > 0"),
    ("budget_minutes: 30\n", (0, 1), "share must be"),
    ("budget_minutes: 30\n", ("big", 1), "share must be a finite number"),
])
def test_bad_budgets_are_refused_before_any_work(tmp_path, head, shares, message):
    path = _stages_file(tmp_path, head, shares)
    with pytest.raises(UsageError, match=message):
        load_stages(path)
    assert main(["train", "recipe", str(path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    # the file is checked whole even when --budget-minutes replaces its budget
    assert main(["train", "recipe", str(path), "--out", str(tmp_path / "r"), "--budget-minutes", "5"]) == 2
    assert not (tmp_path / "r").exists()


def test_share_belongs_to_training_stages(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("budget_minutes: 5\nstages:\n  - {name: m, ship: {}, share: 2}\n")
    with pytest.raises(UsageError, match=r"unknown keys \['share'\]"):
        load_stages(path)


@pytest.mark.parametrize("text", ["my notes", '{"spent_s": {"vae": NaN}}', '{"spent_s": {"vae": -5}}'])
def test_a_foreign_ledger_is_left_alone(tmp_path, text):
    out = tmp_path / "runs"
    out.mkdir()
    (out / LEDGER).write_text(text)
    assert main(["train", "recipe", str(_stages_file(tmp_path)), "--out", str(out)]) == 2
    assert (out / LEDGER).read_text() == text
