"""Presets build, are seeded, and have the promised sizes (params, latent factor, per-head width)."""

import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.models import PRESETS, build_components, get_preset


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _min_head_width(unet_config: dict) -> int:
    heads = unet_config["attention_head_dim"]  # diffusers: number of heads (see presets docstring)
    heads = [heads] * len(unet_config["block_out_channels"]) if isinstance(heads, int) else list(heads)
    return min(c // h for c, h in zip(unet_config["block_out_channels"], heads))


def test_tiny_builds_seeded_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = build_components("tiny", seed=0)
    assert torch.equal(before, torch.get_rng_state())
    b = build_components("tiny", seed=0)
    c = build_components("tiny", seed=1)
    for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()):
        assert torch.equal(x, y)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
    assert a.latent_shape() == (4, 16, 16) and a.image_size == 32
    assert a.text_encoder.kind == "clip" and a.text_encoder.max_length == 77


def test_tiny_forward_shapes_match_latent_shape():
    c = build_components("tiny", seed=0)
    ctx = c.text_encoder.encode(["a cat", "a dog"])
    x = torch.randn(2, *c.latent_shape())
    with torch.no_grad():
        eps = c.unet(x, torch.tensor([10, 500]), encoder_hidden_states=ctx).sample
        img = c.vae.decode(x).sample
    assert eps.shape == x.shape
    assert img.shape == (2, 3, c.image_size, c.image_size)


def test_small64_sizes():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    p = PRESETS["small64"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**p.unet)
        vae = AutoencoderKL(**p.vae)
    assert 5e6 <= _params(unet) <= 15e6
    assert unet.config.cross_attention_dim == 384  # MiniLM's hidden size
    assert p.vae_scale_factor == 4 and p.image_size // p.vae_scale_factor == 16
    assert vae.config.latent_channels == 4
    assert p.text_encoder == "minilm"


@pytest.mark.parametrize("name", ["tiny", "small64"])
def test_own_presets_keep_head_width_at_least_32(name):
    assert _min_head_width(PRESETS[name].unet) >= 32


def test_sd15_matches_the_stable_diffusion_architecture():
    from diffusers import UNet2DConditionModel

    p = PRESETS["sd15"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**p.unet)
    # SD 1.5 UNet: 859,520,964 parameters (the figure in the SD model card / diffusers config)
    assert _params(unet) == 859_520_964
    assert p.vae_scale_factor == 8 and p.unet["sample_size"] == 64
    assert p.clip_text_config["hidden_size"] == 768 and p.clip_text_config["num_hidden_layers"] == 12
    s = p.scheduler
    assert (s["_class_name"], s["beta_schedule"], s["beta_start"], s["beta_end"]) == (
        "PNDMScheduler", "scaled_linear", 0.00085, 0.012
    )
    assert (s["timestep_spacing"], s["steps_offset"], s["skip_prk_steps"], s["set_alpha_to_one"]) == (
        "leading", 1, True, False
    )


def test_text_encoder_override_sets_cross_attention_width():
    c = build_components("tiny", seed=0, text_encoder="minilm")
    assert c.text_encoder.kind == "minilm"
    assert c.unet.config.cross_attention_dim == 384 == c.text_encoder.hidden_size


def test_latent_channels_override_sets_vae_and_unet_alike():
    c = build_components("tiny", seed=0, latent_channels=8)
    assert c.vae.config.latent_channels == 8 == c.unet.config.in_channels == c.unet.config.out_channels
    assert c.latent_shape(32)[0] == 8
    again = build_components("tiny", seed=0, latent_channels=8).unet.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in c.unet.state_dict().items())  # seeded like any preset
    for bad in (0, -4, 2.5, True):
        with pytest.raises(UsageError, match="latent channels must be an integer >= 1"):
            build_components("tiny", latent_channels=bad)


def test_unknown_preset_and_text_encoder_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="known presets: tiny"):
        get_preset("huge")
    with pytest.raises(UsageError, match="text encoder must be 'clip', 'minilm' or an existing model folder"):
        build_components("tiny", text_encoder=str(tmp_path / "missing"))  # names no flag: recipes reach it too
