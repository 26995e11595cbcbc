"""`ldmkit train lora`: adapters on a frozen UNet through the shared loop; the result is a kohya-format file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ldmkit.errors import UsageError
from ldmkit.models.lora_files import read_lora
from ldmkit.models.presets import build_components
from ldmkit.pipeline.lora import LoraState
from ldmkit.training.trainers import run_trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lora-tiny.yaml"
FAST = ["train.steps=4", "train.batch_size=4", "train.checkpoint_every=2", "train.progress_bar=false",
        "data.builtin_n=16", "train.log_every=1"]


@pytest.mark.slow
def test_train_lora_writes_a_kohya_file_and_leaves_the_base_frozen(tmp_path):
    run = tmp_path / "run"
    run_trainer("lora", CONFIG, run, FAST)
    lora = read_lora(run / "final" / "lora.safetensors")
    assert lora.format == "kohya" and not lora.warnings
    assert lora.metadata["ss_network_dim"] == "4" and lora.metadata["ldmkit_trigger_words"] == '["sks"]'
    names = {name for _, name in lora.layers}
    assert names and all(name.endswith(("to_q", "to_k", "to_v", "to_out_0")) for name in names)
    assert {layer.rank for layer in lora.layers.values()} == {4}
    assert any(layer.up.abs().max() > 0 for layer in lora.layers.values())  # trained: up starts at zero
    step = run / "checkpoints" / "step-00000004"
    assert read_lora(step / "model" / "lora.safetensors").layers.keys() == lora.layers.keys()
    # every base weight in the checkpoint is still the preset's (tiny, seed 0): only the adapters trained
    c = build_components("tiny", seed=0)
    base_sd = c.unet.state_dict()
    saved = load_file(step / "model.unet.safetensors")
    frozen = {k: v for k, v in saved.items() if "lora_" not in k}
    assert len(frozen) == len(base_sd)
    assert all(torch.equal(v, base_sd[k.replace(".base_layer", "")]) for k, v in frozen.items())
    # applied to that base, the file changes the UNet's output
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        base = c.unet(x, t, encoder_hidden_states=ctx).sample
        LoraState({"unet": c.unet}).load(lora, 1.0)
        assert (c.unet(x, t, encoder_hidden_states=ctx).sample - base).abs().max() > 0


def test_lora_section_is_checked():
    with pytest.raises(UsageError, match="lora.targets"):
        run_trainer("lora", CONFIG, "/nonexistent/run", ["lora.targets=everything"])
    with pytest.raises(UsageError, match="lora.rank"):
        run_trainer("lora", CONFIG, "/nonexistent/run", ["lora.rank=0"])


@pytest.mark.slow
def test_a_resumed_lora_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    run_trainer("lora", CONFIG, straight, FAST)
    run_trainer("lora", CONFIG, resumed, [*FAST, "train.steps=2"])
    run_trainer("lora", CONFIG, resumed, FAST)  # continues from step 2's checkpoint
    a, b = (load_file(run / "final" / "lora.safetensors") for run in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
