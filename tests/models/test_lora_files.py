"""LoRA files: reading the ecosystem's layouts, refusing what is not plain LoRA, writing, merging exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldmkit.errors import LdmkitError, UnsafeFileError, UsageError
from ldmkit.models.lora_files import (
    LoraFile,
    LoraLayer,
    describe,
    read_lora,
    resolve,
)
from ldmkit.models.lora_write import lora_metadata, merge_loras, save_lora


class Tiny(torch.nn.Module):
    """A stand-in model with the module names an SD UNet and a CLIP text encoder have."""

    def __init__(self):
        super().__init__()
        self.attn1 = torch.nn.ModuleDict({"to_q": torch.nn.Linear(8, 6, bias=False),
                                          "to_out": torch.nn.ModuleList([torch.nn.Linear(6, 8)])})
        self.conv1 = torch.nn.Conv2d(4, 5, 3, padding=1)
        self.proj_in = torch.nn.Conv2d(5, 5, 1)


def kohya_state(g, alpha=True):
    """What sd-scripts writes for a LoCon on the modules of Tiny: Linear, 3x3 conv, 1x1 conv."""
    sd = {
        "lora_unet_attn1_to_q.lora_down.weight": torch.randn(2, 8, generator=g),
        "lora_unet_attn1_to_q.lora_up.weight": torch.randn(6, 2, generator=g),
        "lora_unet_attn1_to_out_0.lora_down.weight": torch.randn(3, 6, generator=g),
        "lora_unet_attn1_to_out_0.lora_up.weight": torch.randn(8, 3, generator=g),
        "lora_unet_conv1.lora_down.weight": torch.randn(2, 4, 3, 3, generator=g),
        "lora_unet_conv1.lora_up.weight": torch.randn(5, 2, 1, 1, generator=g),
        "lora_unet_proj_in.lora_down.weight": torch.randn(2, 5, 1, 1, generator=g),
        "lora_unet_proj_in.lora_up.weight": torch.randn(5, 2, 1, 1, generator=g),
    }
    if alpha:
        for k in [k for k in sd if k.endswith("lora_down.weight")]:
            sd[k.replace("lora_down.weight", "alpha")] = torch.tensor(1.0).half()
    return {k: v.half() for k, v in sd.items()}


def test_reads_kohya_with_alpha_and_conv(tmp_path):
    save_file(kohya_state(torch.Generator().manual_seed(0)), tmp_path / "a.safetensors", metadata={"ss_network_dim": "2"})
    lora = read_lora(tmp_path / "a.safetensors")
    assert lora.format == "kohya" and not lora.warnings and lora.metadata == {"ss_network_dim": "2"}
    assert lora.layers[("unet", "attn1_to_out_0")].rank == 3
    assert lora.layers[("unet", "conv1")].scale == pytest.approx(0.5)
    resolved = resolve(lora, {"unet": Tiny()})
    assert set(resolved) == {("unet", n) for n in ("attn1.to_q", "attn1.to_out.0", "conv1", "proj_in")}
    d = describe(lora)
    assert d["conv_kxk_layers"] == 1 and d["ranks"] == [2, 3] and d["targets"]["to_q"] == 1


def test_missing_alpha_is_rank_with_a_warning(tmp_path):
    save_file(kohya_state(torch.Generator().manual_seed(0), alpha=False), tmp_path / "a.safetensors")
    lora = read_lora(tmp_path / "a.safetensors")
    assert all(layer.alpha == layer.rank for layer in lora.layers.values())
    assert len(lora.warnings) == 1 and "4 of 4 layers have no alpha" in lora.warnings[0]


def test_delta_is_up_at_down_times_alpha_over_rank():
    down, up = torch.randn(2, 4, 3, 3), torch.randn(5, 2, 1, 1)
    delta = LoraLayer(down, up, 1.0).delta()
    expect = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 0.5
    torch.testing.assert_close(delta, expect)


@pytest.mark.parametrize("key, what", [
    ("lora_unet_conv1.lora_mid.weight", "lora_mid"), ("lora_unet_conv1.hada_w1_a", "LoHa"),
    ("lora_unet_conv1.lokr_w1", "LoKr"), ("lora_unet_conv1.dora_scale", "DoRA"),
    ("model.diffusion_model.weight", "not a LoRA key"),
])  # fmt: skip
def test_other_adapter_kinds_are_refused_naming_the_key(tmp_path, key, what):
    sd = kohya_state(torch.Generator().manual_seed(0))
    sd[key] = torch.zeros(2, 2).half()
    save_file(sd, tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match=what) as err:
        read_lora(tmp_path / "a.safetensors")
    assert key in str(err.value)


def test_a_key_matching_no_module_is_an_error_naming_it(tmp_path):
    sd = kohya_state(torch.Generator().manual_seed(0))
    sd["lora_unet_attn9_to_q.lora_down.weight"] = torch.zeros(2, 8).half()
    sd["lora_unet_attn9_to_q.lora_up.weight"] = torch.zeros(6, 2).half()
    save_file(sd, tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match="lora_unet_attn9_to_q matches no"):
        resolve(read_lora(tmp_path / "a.safetensors"), {"unet": Tiny()})
    with pytest.raises(UsageError, match="targets text_encoder"):
        resolve(LoraFile({("text_encoder", "x"): LoraLayer(torch.zeros(1, 2), torch.zeros(2, 1), 1)}), {"unet": Tiny()})


def test_wrong_shapes_and_huge_ranks_are_refused_from_the_header(tmp_path):
    sd = kohya_state(torch.Generator().manual_seed(0))
    sd["lora_unet_attn1_to_q.lora_down.weight"] = torch.zeros(2, 7).half()
    save_file(sd, tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match="do not fit attn1.to_q"):
        resolve(read_lora(tmp_path / "a.safetensors"), {"unet": Tiny()})
    sd["lora_unet_attn1_to_q.lora_down.weight"] = torch.zeros(2000, 1).half()
    sd["lora_unet_attn1_to_q.lora_up.weight"] = torch.zeros(6, 2000).half()
    save_file(sd, tmp_path / "b.safetensors")
    with pytest.raises(UsageError, match="rank 1..1024"):
        read_lora(tmp_path / "b.safetensors")


def test_pickles_and_other_suffixes_are_refused_without_loading(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"not even read")
    with pytest.raises(UnsafeFileError, match="never loads them"):
        read_lora(tmp_path / "a.pt")
    (tmp_path / "a.ckpt2").write_bytes(b"x")
    with pytest.raises(UsageError, match="must be .safetensors"):
        read_lora(tmp_path / "a.ckpt2")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(LdmkitError, match="not a valid safetensors"):
        read_lora(tmp_path / "bad.safetensors")


def test_peft_and_old_diffusers_layouts(tmp_path):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 8, generator=g), torch.randn(6, 2, generator=g)
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {}})}
    save_file({"unet.attn1.to_q.lora_A.weight": a, "unet.attn1.to_q.lora_B.weight": b}, tmp_path / "p.safetensors",
              metadata=meta)
    lora = read_lora(tmp_path / "p.safetensors")
    assert lora.format == "peft" and lora.layers[("unet", "attn1.to_q")].alpha == 4.0 and not lora.warnings
    save_file({"unet.attn1.processor.to_out_lora.down.weight": torch.randn(2, 6, generator=g),
               "unet.attn1.processor.to_out_lora.up.weight": torch.randn(8, 2, generator=g)}, tmp_path / "d.safetensors")
    old = read_lora(tmp_path / "d.safetensors")
    assert old.format == "diffusers" and set(resolve(old, {"unet": Tiny()})) == {("unet", "attn1.to_out.0")}
    assert old.warnings  # no alpha: rank assumed


def test_kohya_writing_round_trips_with_alpha_fp16_and_metadata(tmp_path):
    g = torch.Generator().manual_seed(2)
    layers = {("unet", "attn1.to_q"): LoraLayer(torch.randn(2, 8, generator=g), torch.randn(6, 2, generator=g), 0.5),
              ("unet", "conv1"): LoraLayer(torch.randn(2, 4, 3, 3, generator=g), torch.randn(5, 2, 1, 1, generator=g), 2)}
    meta = lora_metadata(rank=2, alpha=0.5, base_model_hash="abc", trigger_words=("sks",), data_card="8 images")
    path = save_lora(layers, tmp_path / "out.safetensors", metadata=meta)
    raw = load_file(path)
    assert raw["lora_unet_attn1_to_q.lora_down.weight"].dtype == torch.float16
    assert raw["lora_unet_attn1_to_q.alpha"].item() == 0.5 and "lora_unet_conv1.alpha" in raw
    back = read_lora(path)
    assert json.loads(back.metadata["ldmkit_trigger_words"]) == ["sks"] and back.metadata["ss_network_dim"] == "2"
    torch.testing.assert_close(back.layers[("unet", "conv1")].delta(), layers[("unet", "conv1")].delta(),
                               rtol=2e-3, atol=2e-3)
    with pytest.raises(UsageError, match="not overwriting"):
        save_lora(layers, path)
    peft = read_lora(save_lora(layers, tmp_path / "peft.safetensors", fmt="peft", dtype=torch.float32))
    torch.testing.assert_close(peft.layers[("unet", "attn1.to_q")].delta(), layers[("unet", "attn1.to_q")].delta())


def test_merge_concatenates_ranks_exactly():
    g = torch.Generator().manual_seed(3)
    la = LoraLayer(torch.randn(2, 4, 3, 3, generator=g), torch.randn(5, 2, 1, 1, generator=g), 1.0)
    lb = LoraLayer(torch.randn(3, 4, 3, 3, generator=g), torch.randn(5, 3, 1, 1, generator=g), 6.0)
    only_b = LoraLayer(torch.randn(1, 8, generator=g), torch.randn(6, 1, generator=g), 1.0)
    a = LoraFile({("unet", "conv1"): la})
    b = LoraFile({("unet", "conv1"): lb, ("unet", "attn1_to_q"): only_b})
    merged = merge_loras([(a, 0.7), (b, -0.4)])
    assert merged[("unet", "conv1")].rank == 5
    torch.testing.assert_close(merged[("unet", "conv1")].delta(), 0.7 * la.delta() - 0.4 * lb.delta())
    torch.testing.assert_close(merged[("unet", "attn1_to_q")].delta(), -0.4 * only_b.delta())


def test_cli_inspect_and_merge(tmp_path, capsys):
    from ldmkit.cli import main

    g = torch.Generator().manual_seed(4)
    a = {("unet", "attn1.to_q"): LoraLayer(torch.randn(2, 8, generator=g), torch.randn(6, 2, generator=g), 1.0)}
    b = {("unet", "attn1.to_q"): LoraLayer(torch.randn(3, 8, generator=g), torch.randn(6, 3, generator=g), 3.0)}
    save_lora(a, tmp_path / "a.safetensors", metadata=lora_metadata(rank=2, alpha=1, trigger_words=("sks",)))
    save_lora(b, tmp_path / "b.safetensors", fmt="peft")
    assert main(["lora", "inspect", str(tmp_path / "a.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "kohya LoRA, 1 layers (unet 1)" in out and "rank 2, alpha 1" in out and 'ldmkit_trigger_words: ["sks"]' in out
    out_path = tmp_path / "m.safetensors"
    assert main(["lora", "merge", f"{tmp_path / 'a.safetensors'}:0.5", f"{tmp_path / 'b.safetensors'}:2",
                 "--out", str(out_path), "--dtype", "fp32"]) == 0
    merged = read_lora(out_path).layers[("unet", "attn1_to_q")]
    la, lb = read_lora(tmp_path / "a.safetensors").layers, read_lora(tmp_path / "b.safetensors").layers
    expect = 0.5 * la[("unet", "attn1_to_q")].delta() + 2 * lb[("unet", "attn1.to_q")].delta()
    assert merged.rank == 5
    torch.testing.assert_close(merged.delta(), expect)
    capsys.readouterr()
    assert main(["lora", "merge", str(tmp_path / "a.safetensors"), "--out", str(out_path)]) == 2
    assert main(["lora", "merge", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "p.safetensors"),
                 "--format", "peft"]) == 2
    (tmp_path / "x.bin").write_bytes(b"x")
    assert main(["lora", "inspect", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[:2] for line in err] == [["ldmkit", " error"]] * 3
    assert "exists" in err[0] and "--model DIR" in err[1] and "pickles" in err[2]
