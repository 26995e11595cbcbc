"""DreamBooth mode of `ldmkit train lora`: subject images + class images drawn by the base model (cached in the run,
resumed), the two-part loss, exact resume after SIGKILL, and the recipe's checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ldmkit.errors import DataError, UsageError
from ldmkit.models.lora_files import read_lora
from ldmkit.training.dreambooth import PriorRows, class_image_paths, prior_preservation_loss
from ldmkit.training.recipes_personal import DreamBoothSection
from ldmkit.training.trainers import run_trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dreambooth-tiny.yaml"


def overrides(folder: Path, *more: str) -> list[str]:
    return [f"dreambooth.instance_data={folder}", *more]


@pytest.mark.slow
def test_dreambooth_run_draws_class_images_and_writes_both_lora_files(tmp_path, subject):
    run = tmp_path / "run"
    result = run_trainer("lora", CONFIG, run, overrides(subject(tmp_path / "subject"), "train.steps=3"))
    assert result.step == 3 and result.final_dir == run / "final"
    manifest = json.loads((run / "class_images" / "manifest.json").read_text())
    assert manifest["prompt"] == "a photo of a circle" and manifest["steps"] == 2 and manifest["image_size"] == 32
    assert sorted(p.name for p in (run / "class_images").glob("*.png")) == [f"{i:04d}.png" for i in range(4)]
    lora = read_lora(run / "final" / "lora.safetensors")
    parts = {part for part, _ in lora.layers}
    assert parts == {"unet", "text_encoder"} and lora.format == "kohya"
    keys = load_file(run / "final" / "lora.safetensors").keys()
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    card = json.loads(lora.metadata["ldmkit_data_card"])["dreambooth"]
    assert card["instance_images"] == 3 and card["class_images"] == 4
    diffusers_file = read_lora(run / "final" / "pytorch_lora_weights.safetensors")
    assert diffusers_file.format == "peft" and len(diffusers_file.layers) == len(lora.layers)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert logged and all({"instance_loss", "prior_loss"} <= r.keys() for r in logged)
    for r in logged:  # loss = instance + 1.0 * prior (averaged over the logging window alike)
        assert r["loss"] == pytest.approx(r["instance_loss"] + r["prior_loss"], rel=1e-5)


def test_prior_rows_and_loss_follow_eq_2():
    rows = PriorRows(["class/0000.png", "class/0001.png", "instance/a.png", "instance/b.png", "instance/c.png"])
    assert rows.instance == [2, 3, 4] and rows.prior == [0, 1]
    picked, is_class = rows.rows([2, 0], torch.Generator().manual_seed(0))
    assert picked[:2] == [4, 2] and set(picked[2:]) <= {0, 1} and is_class.tolist() == [False, False, True, True]
    per_sample = torch.tensor([1.0, 3.0, 10.0, 20.0])
    loss, metrics = prior_preservation_loss(per_sample, is_class, 0.5)
    assert float(loss) == pytest.approx(2.0 + 0.5 * 15.0) and metrics == {"instance_loss": 2.0, "prior_loss": 15.0}
    alone = PriorRows(["instance/a.png"])
    picked, is_class = alone.rows([0, 0], torch.Generator())
    assert picked == [0, 0] and not is_class.any()
    assert float(prior_preservation_loss(torch.tensor([1.0, 3.0]), is_class, 1.0)[0]) == 2.0


@pytest.mark.slow
def test_class_images_are_reused_redrawn_when_missing_and_refused_when_settings_change(tmp_path, monkeypatch):
    from ldmkit.models.presets import build_components
    from ldmkit.training import dreambooth

    components = build_components("tiny", seed=0)
    section = DreamBoothSection(instance_data=str(tmp_path), instance_prompt="a zxq circle",
                                class_prompt="a red circle", class_images=3, class_steps=2)
    monkeypatch.setattr(dreambooth, "GENERATE_CHUNK", 2)  # chunks {0, 1} and {2}
    paths = class_image_paths(components, section, tmp_path, 32)
    first = [p.read_bytes() for p in paths]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert len(set(first)) == 3  # seeds 0, 1, 2: three different images
    paths[1].unlink()  # as if killed while writing chunk {0, 1}
    again = class_image_paths(components, section, tmp_path, 32)
    assert [p.read_bytes() for p in again] == first  # the same images (same seeds, same chunk mates)
    assert again[2].stat().st_mtime_ns == stamps[2]  # the complete chunk was not drawn again
    more = DreamBoothSection(**{**section.__dict__, "class_images": 4})
    grown = [p.read_bytes() for p in class_image_paths(components, more, tmp_path, 32)]
    fresh = [p.read_bytes() for p in class_image_paths(components, more, tmp_path / "fresh", 32)]
    # the complete chunk {0, 1} is kept; {2, 3} is drawn whole, as a fresh run of 4 draws it (image 2's chunk mate
    # changed, so its last bits may differ from the 3-image run's with more than one thread)
    assert grown == fresh and grown[:2] == first[:2]
    changed = DreamBoothSection(**{**section.__dict__, "class_prompt": "a blue square"})
    with pytest.raises(UsageError, match="prompt"):
        class_image_paths(components, changed, tmp_path, 32)
    other_model = build_components("tiny", seed=1)
    with pytest.raises(UsageError, match="base_weights"):
        class_image_paths(other_model, section, tmp_path, 32)
    # the base model's default sampler is recorded by name: a model whose default changed since does not add
    # images of another sampler to the folder, and naming the old one explicitly reuses it
    import dataclasses
    import json

    assert json.loads((tmp_path / "class_images" / "manifest.json").read_text())["sampler"] == "pndm"  # tiny: PNDM
    redefault = dataclasses.replace(components, meta={**components.meta, "sampling": {"sampler": "euler_ancestral"}})
    with pytest.raises(UsageError, match="sampler"):
        class_image_paths(redefault, section, tmp_path, 32)
    pinned = DreamBoothSection(**{**section.__dict__, "class_sampler": "pndm"})
    assert [p.read_bytes() for p in class_image_paths(redefault, pinned, tmp_path, 32)] == grown[:3]


def _train(run_dir, folder, kill_at=None):
    from ldmkit.config.recipe import apply_overrides, from_dict, read_yaml_mapping
    from ldmkit.training.lora_task import LoraTask
    from ldmkit.training.loop import train
    from ldmkit.training.recipes import LoraRecipe

    recipe = from_dict(LoraRecipe, apply_overrides(LoraRecipe, read_yaml_mapping(CONFIG), overrides(folder)))
    task = LoraTask(recipe, run_dir)
    sys.modules["ldmkit_tests_toy_task"].kill_at_loss_call(task, kill_at)  # loaded by the toy fixture
    return train(task, recipe.train, run_dir, recipe=recipe)


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal(toy, tmp_path, subject):
    """SIGKILL inside step 5 of 6 (checkpoint at 3), resume: both LoRA files equal an uninterrupted run's."""
    folder = subject(tmp_path / "subject")
    _train(tmp_path / "ref", folder)
    assert toy.run_in_child(lambda: _train(tmp_path / "run", folder, kill_at=5)) == -9
    result = _train(tmp_path / "run", folder)
    assert result.resumed_from_step == 3 and result.step == 6
    for name in ("lora.safetensors", "pytorch_lora_weights.safetensors"):
        ref, got = (load_file(str(run / "final" / name)) for run in (tmp_path / "ref", tmp_path / "run"))
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), name
    assert any(v.abs().max() > 0 for k, v in ref.items() if k.endswith("lora_B.weight") and "text_encoder" in k)


def test_recipe_checks(tmp_path, subject):
    folder = subject(tmp_path / "subject", 1)
    cases = [
        (["data.builtin=shapes"], "no effect with `dreambooth`"),
        (["dreambooth=null"], "needs a `data` section"),
        (["lora.text_encoder=false"], "text_encoder_lr has no effect"),
        (["dreambooth.class_prompt="], "class_images, dreambooth.class_steps, dreambooth.class_guidance have no"),
        (["dreambooth.instance_prompt=a photo of a circle"], "must differ"),
        (["dreambooth.class_images=1001"], "at most 1000"),
        (["dreambooth.class_sampler=eulr"], "unknown sampler 'eulr'"),
        (["dreambooth.class_prompt=", "dreambooth.class_images=100", "dreambooth.class_steps=25",
          "dreambooth.class_guidance=null", "dreambooth.class_sampler=ddim"], "class_sampler has no effect"),
        (["unet.eval_clip=somewhere"], "eval_clip has no effect"),
        (["unet.class_conditional=true"], "class_conditional has no effect"),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError, match=message):
            run_trainer("lora", CONFIG, tmp_path / "run", overrides(folder, *extra))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds 0 images"):
        run_trainer("lora", CONFIG, tmp_path / "run2", overrides(tmp_path / "empty"))
    with pytest.raises(DataError, match="not a folder"):
        run_trainer("lora", CONFIG, tmp_path / "run3", overrides(tmp_path / "missing"))
