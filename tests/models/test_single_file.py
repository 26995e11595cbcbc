"""load_single_file: a tiny model written with CompVis key names loads back to the same weights.

The inverse key mapping (diffusers -> CompVis) is written here from the original LDM module
layout, independently of the forward converter in diffusers, so the round trip checks both.
"""

import re

import pytest
import torch

from ldmkit.errors import ModelFolderError, UnsafeFileError
from ldmkit.models import build_components, load_single_file

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_UNET_RESNET[head]}.{tail}"


def unet_to_compvis(key: str, lpb: int, up_has_attn: list[bool]) -> str:
    """Diffusers UNet2DConditionModel key -> CompVis openaimodel key."""
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + b * (lpb + 1) + i
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = b * (lpb + 1) + i
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        slot = 2 if up_has_attn[b] else 1
        return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
    raise AssertionError(f"no CompVis name for UNet key {key}")


def vae_to_compvis(key: str, value: torch.Tensor, n_blocks: int) -> tuple[str, torch.Tensor]:
    """Diffusers AutoencoderKL key -> CompVis autoencoder key (attention linears become 1x1 convs)."""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.block", key)
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample", key
    )
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    if ".mid_block.attentions.0." in key:
        key = key.replace("mid_block.attentions.0", "mid.attn_1")
        for new, old in _VAE_ATTN.items():
            key = key.replace(f".{new}.", f".{old}.")
        if value.ndim == 2:
            value = value[:, :, None, None]
    return key, value


def to_compvis(c) -> dict[str, torch.Tensor]:
    lpb = c.unet.config.layers_per_block
    up_attn = ["CrossAttn" in t for t in c.unet.config.up_block_types]
    out = {f"model.diffusion_model.{unet_to_compvis(k, lpb, up_attn)}": v for k, v in c.unet.state_dict().items()}
    n_blocks = len(c.vae.config.block_out_channels)
    for k, v in c.vae.state_dict().items():
        name, value = vae_to_compvis(k, v, n_blocks)
        out[f"first_stage_model.{name}"] = value
    for k, v in c.text_encoder.model.state_dict().items():
        out[f"cond_stage_model.transformer.{k}"] = v
    return {k: v.contiguous() for k, v in out.items()}


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def tiny_and_file(tmp_path_factory):
    from safetensors.torch import save_file

    c = build_components("tiny", seed=3)
    path = tmp_path_factory.mktemp("single") / "tiny-compvis.safetensors"
    save_file(to_compvis(c), str(path))
    return c, path


def test_single_file_round_trip_gives_identical_weights_and_outputs(tiny_and_file):
    original, path = tiny_and_file
    loaded = load_single_file(path, preset="tiny")
    _assert_same(original.unet, loaded.unet)
    _assert_same(original.vae, loaded.vae)
    _assert_same(original.text_encoder.model, loaded.text_encoder.model)
    prompts = ["a grinning face with sunglasses"]
    torch.testing.assert_close(original.text_encoder.encode(prompts), loaded.text_encoder.encode(prompts))
    x = torch.randn(1, 4, 16, 16)
    ctx = original.text_encoder.encode(prompts)
    with torch.no_grad():
        torch.testing.assert_close(
            original.unet(x, 10, encoder_hidden_states=ctx).sample, loaded.unet(x, 10, encoder_hidden_states=ctx).sample
        )
        torch.testing.assert_close(original.vae.decode(x).sample, loaded.vae.decode(x).sample)
    assert loaded.scheduler_config == original.scheduler_config
    assert loaded.source == path


def test_single_file_with_the_wrong_preset_names_the_mismatch(tiny_and_file, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = tiny_and_file

    state = load_file(path)
    del state["model.diffusion_model.out.2.weight"]
    broken = tmp_path / "missing.safetensors"
    save_file(state, str(broken))
    with pytest.raises(ModelFolderError, match=r"UNet weights do not match preset 'tiny'.*conv_out.weight"):
        load_single_file(broken, preset="tiny")
    with pytest.raises(ModelFolderError, match="shape"):
        load_single_file(path, preset=_wider_tiny())


def _wider_tiny():
    import dataclasses

    from ldmkit.models.presets import PRESETS

    tiny = PRESETS["tiny"]
    return dataclasses.replace(tiny, name="tiny-wide", clip_text_config={**tiny.clip_text_config, "intermediate_size": 96})


def test_single_file_pickle_needs_opt_in(tiny_and_file, tmp_path):
    original, path = tiny_and_file
    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(path), "global_step": 7}, ckpt)
    with pytest.raises(UnsafeFileError, match="--allow-pickle"):
        load_single_file(ckpt, preset="tiny")
    loaded = load_single_file(ckpt, preset="tiny", allow_pickle=True)
    _assert_same(original.unet, loaded.unet)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelFolderError, match="nope.safetensors"):
        load_single_file(tmp_path / "nope.safetensors", preset="tiny")
