"""Sane bounds on a model folder's component configs, checked BEFORE any module is built (issue 13).

A config.json can ask for any size: `block_out_channels: [100000, ...]` would make diffusers allocate
hundreds of gigabytes before a single weight is read. Every size field that drives an allocation is
checked against a range here (one-line error naming the file and the field), then the parameter
count is estimated from the config alone and refused above `MAX_COMPONENT_PARAMS`. Pure Python: no
torch, no diffusers, so a hostile config is refused in milliseconds.

The ranges are far above every released Stable Diffusion (SD-XL's UNet: 2.6B parameters, channels
up to 1280, 10 transformer layers per block) and far below what would exhaust a machine. A real model
that needs more raises the parameter limit with the environment variable `LDMKIT_MAX_PARAMS`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError

MAX_COMPONENT_PARAMS = 5_000_000_000
"""Largest parameter count one component (UNet, VAE, text encoder) may have: 20 GB as float32, about
twice SD-XL's UNet. Override with the environment variable LDMKIT_MAX_PARAMS (an integer)."""
MAX_PARAMS_ENV = "LDMKIT_MAX_PARAMS"

# field -> (lowest, highest) for integer size fields; a list value is checked element by element
UNET_BOUNDS: dict[str, tuple[int, int]] = {
    "sample_size": (1, 1024),
    "in_channels": (1, 256),
    "out_channels": (1, 256),
    "block_out_channels": (1, 8192),
    "layers_per_block": (1, 32),
    "transformer_layers_per_block": (1, 64),
    "reverse_transformer_layers_per_block": (1, 64),
    "attention_head_dim": (1, 4096),
    "num_attention_heads": (1, 1024),
    "cross_attention_dim": (1, 16384),
    "norm_num_groups": (1, 1024),
    "time_embedding_dim": (1, 65536),
    "num_class_embeds": (1, 1_000_000),
    "encoder_hid_dim": (1, 16384),
    "addition_time_embed_dim": (1, 16384),
    "projection_class_embeddings_input_dim": (1, 65536),
    "time_cond_proj_dim": (1, 16384),
    "conv_in_kernel": (1, 15),
    "conv_out_kernel": (1, 15),
}
VAE_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 256),
    "out_channels": (1, 256),
    "latent_channels": (1, 1024),
    "block_out_channels": (1, 8192),
    "layers_per_block": (1, 32),
    "norm_num_groups": (1, 1024),
    "sample_size": (1, 16384),
}
TEXT_BOUNDS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 16384),
    "num_hidden_layers": (1, 256),
    "num_attention_heads": (1, 1024),
    "intermediate_size": (1, 131072),
    "vocab_size": (1, 2_000_000),
    "max_position_embeddings": (1, 65536),
    "type_vocab_size": (1, 1024),
    "projection_dim": (1, 16384),
}
SCHEDULER_BOUNDS: dict[str, tuple[int, int]] = {
    "num_train_timesteps": (1, 100_000),
    "steps_offset": (0, 100_000),
    "solver_order": (1, 8),
}
MAX_BLOCKS = 8  # resolution levels of a UNet or VAE


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _ints(file: Path, name: str, value: Any, lo: int, hi: int) -> list[int]:
    """The integers of a size field (one int, or a list/nested list of them), each in lo..hi."""
    values = value if isinstance(value, (list, tuple)) else [value]
    flat: list[Any] = []
    for v in values[:1025]:
        flat.extend(v[:1025] if isinstance(v, (list, tuple)) else [v])
    if len(values) > 1024:
        raise ModelFolderError(f"{file}: {name} has {len(values)} entries; at most 1024 are allowed")
    for v in flat:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelFolderError(f"{file}: {name} must be an integer or a list of integers, got {_clip(value)}")
        if not lo <= v <= hi:
            raise ModelFolderError(f"{file}: {name} = {_clip(value)} is outside the allowed range {lo}..{hi}")
    return flat


def _check_fields(file: Path, config: dict[str, Any], bounds: dict[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in bounds.items():
        value = config.get(name)
        if value is not None:
            _ints(file, name, value, lo, hi)


def _per_level(file: Path, config: dict[str, Any], name: str, levels: int, default: int) -> list[int]:
    value = config.get(name, default)
    if value is None:
        return [default] * levels
    if isinstance(value, (list, tuple)):
        flat = [max(v, default=default) if isinstance(v, (list, tuple)) else v for v in value]
        if len(flat) != levels:
            raise ModelFolderError(f"{file}: {name} has {len(flat)} entries but block_out_channels has {levels}")
        return [int(v) for v in flat]
    return [int(value)] * levels


def _channels(file: Path, config: dict[str, Any], default: tuple[int, ...]) -> list[int]:
    channels = config.get("block_out_channels", default)  # the default: diffusers' constructor default
    if (not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= MAX_BLOCKS
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in channels)):
        raise ModelFolderError(f"{file}: block_out_channels must be a list of 1..{MAX_BLOCKS} integers, "
                               f"got {_clip(channels)}")
    groups = config.get("norm_num_groups")
    if isinstance(groups, int) and not isinstance(groups, bool):
        bad = [c for c in channels if c % groups]
        if bad:
            raise ModelFolderError(f"{file}: norm_num_groups {groups} does not divide block_out_channels {bad[0]}")
    for key in ("down_block_types", "up_block_types"):
        types = config.get(key)
        if types is not None and (not isinstance(types, (list, tuple)) or len(types) != len(channels)):
            raise ModelFolderError(f"{file}: {key} must list one block type per block_out_channels entry "
                                   f"({len(channels)}), got {_clip(types)}")
    return [int(c) for c in channels]


def _n(config: dict[str, Any], key: str, default: int) -> int:
    """One size from a config field already range-checked by `_ints` (the largest entry of a list)."""
    value = config.get(key)
    if value is None:
        return default
    flat = [w for v in value for w in (v if isinstance(v, (list, tuple)) else [v])] \
        if isinstance(value, (list, tuple)) else [value]
    return int(max(flat, default=default))


def _resnet(cin: int, cout: int, temb: int) -> int:
    return 9 * cin * cout + 9 * cout * cout + temb * cout + (cin * cout if cin != cout else 0)


def _transformer(d: int, context: int, layers: int) -> int:
    # self-attention q,k,v,out: 4d^2; cross-attention q,out: 2d^2 and k,v: 2*context*d; GEGLU feed-forward: 12d^2
    return layers * (18 * d * d + 2 * context * d) + 2 * d * d


def estimate_unet_params(file: Path, config: dict[str, Any]) -> int:
    """Approximate parameter count of a UNet2DConditionModel config (convolutions, attention, feed-forward)."""
    channels = _channels(file, config, (320, 640, 1280, 1280))
    n = len(channels)
    layers = _per_level(file, config, "layers_per_block", n, 2)
    depth = _per_level(file, config, "transformer_layers_per_block", n, 1)
    context = _n(config, "cross_attention_dim", 1280)
    down = config.get("down_block_types") or ["CrossAttnDownBlock2D"] * n
    attn = ["CrossAttn" in str(t) for t in down]
    temb = _n(config, "time_embedding_dim", 4 * channels[0])
    total = temb * channels[0] + temb * temb + 9 * channels[0] * (_n(config, "in_channels", 4)
                                                                  + _n(config, "out_channels", 4))
    cin = channels[0]
    for i, c in enumerate(channels):  # down path
        for _ in range(layers[i]):
            total += _resnet(cin, c, temb) + (_transformer(c, context, depth[i]) if attn[i] else 0)
            cin = c
        total += 9 * c * c if i < n - 1 else 0
    total += 2 * _resnet(cin, cin, temb) + _transformer(cin, context, depth[-1])  # mid block
    for i in reversed(range(n)):  # up path: one more resnet per level, each seeing a skip connection
        c = channels[i]
        for _ in range(layers[i] + 1):
            total += _resnet(cin + c, c, temb) + (_transformer(c, context, depth[i]) if attn[i] else 0)
            cin = c
        total += 9 * c * c if i > 0 else 0
    return total


def estimate_vae_params(file: Path, config: dict[str, Any]) -> int:
    """Approximate parameter count of an AutoencoderKL config (encoder + decoder + mid-block attention)."""
    channels = _channels(file, config, (64,))
    layers = _n(config, "layers_per_block", 1)
    latent = _n(config, "latent_channels", 4)
    total = 9 * channels[0] * (_n(config, "in_channels", 3) + _n(config, "out_channels", 3))
    total += 2 * (9 * channels[-1] * 2 * latent + 4 * latent * latent)
    for side_layers in (layers, layers + 1):  # encoder, decoder
        cin = channels[0]
        for c in channels:
            total += side_layers * _resnet(max(cin, c), c, 0) + 9 * c * c
            cin = c
        total += 2 * _resnet(channels[-1], channels[-1], 0) + 4 * channels[-1] ** 2
    return total


def estimate_text_params(config: dict[str, Any]) -> int:
    """Approximate parameter count of a CLIP text / BERT config (embeddings + transformer layers)."""
    h = _n(config, "hidden_size", 512)
    inter = _n(config, "intermediate_size", 4 * h)
    embed = (_n(config, "vocab_size", 49408) + _n(config, "max_position_embeddings", 77)) * h
    return embed + _n(config, "num_hidden_layers", 12) * (4 * h * h + 2 * h * inter)


def max_params() -> int:
    """MAX_COMPONENT_PARAMS, or the environment's LDMKIT_MAX_PARAMS."""
    raw = os.environ.get(MAX_PARAMS_ENV)
    if raw is None:
        return MAX_COMPONENT_PARAMS
    try:
        value = int(raw)
    except ValueError:
        raise ModelFolderError(f"{MAX_PARAMS_ENV}={_clip(raw)} is not an integer") from None
    if value < 1:
        raise ModelFolderError(f"{MAX_PARAMS_ENV} must be >= 1, got {value}")
    return value


def _check_size(file: Path, what: str, params: int) -> None:
    limit = max_params()
    if params > limit:
        raise ModelFolderError(
            f"{file}: this {what} config asks for about {params / 1e9:.1f}B parameters ({params * 4 / 1e9:.0f} GB "
            f"as float32), above the limit of {limit / 1e9:.1f}B; if the model is real, raise the limit with "
            f"{MAX_PARAMS_ENV}=N"
        )


def text_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """The text tower's settings: a CLIPModel config nests them in text_config."""
    nested = config.get("text_config")
    return nested if config.get("model_type") == "clip" and isinstance(nested, dict) else config


def check_unet_config(file: Path, config: dict[str, Any]) -> int:
    """Refuse an out-of-range UNet config; returns its estimated parameter count."""
    _check_fields(file, config, UNET_BOUNDS)
    params = estimate_unet_params(file, config)
    _check_size(file, "UNet", params)
    return params


def check_vae_config(file: Path, config: dict[str, Any]) -> int:
    """Refuse an out-of-range VAE config; returns its estimated parameter count."""
    _check_fields(file, config, VAE_BOUNDS)
    params = estimate_vae_params(file, config)
    _check_size(file, "VAE", params)
    return params


def check_text_config(file: Path, config: dict[str, Any]) -> int:
    """Refuse an out-of-range text encoder config (CLIP text, CLIPModel's text_config, BERT); returns params."""
    text = text_config_of(config)
    _check_fields(file, text, TEXT_BOUNDS)
    heads, hidden = text.get("num_attention_heads"), text.get("hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int) and hidden % heads:
        raise ModelFolderError(f"{file}: num_attention_heads {heads} does not divide hidden_size {hidden}")
    params = estimate_text_params(text)
    _check_size(file, "text encoder", params)
    return params


def check_scheduler_config(file: Path, config: dict[str, Any]) -> None:
    """Refuse a scheduler config whose tables would be huge (num_train_timesteps, trained_betas)."""
    _check_fields(file, config, SCHEDULER_BOUNDS)
    betas = config.get("trained_betas")
    if betas is not None:
        steps = config.get("num_train_timesteps", 1000)
        if not isinstance(betas, list) or len(betas) != steps:
            raise ModelFolderError(f"{file}: trained_betas must be a list of num_train_timesteps ({steps}) numbers")
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in betas):
            raise ModelFolderError(f"{file}: trained_betas must hold finite numbers")
