"""Original CompVis-layout Stable Diffusion checkpoints (one file, SD 1.x / 2.x) -> Components, offline.

Key renaming is diffusers' own (`diffusers.loaders.single_file_utils`, pure functions); the
architectures come from ldmkit presets, never from a download. The checkpoint must match the
preset exactly: every model parameter is filled, or the load fails naming what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError
from ldmkit.models.components import Components
from ldmkit.models.preset_table import PRESETS, ModelPreset, get_preset
from ldmkit.models.safety import PICKLE_SUFFIXES, check_safetensors_header, load_pickle_weights
from ldmkit.models.text import TextEncoder, clip_tokenizer

SD1_CLIP_PREFIX = "cond_stage_model.transformer."  # HF CLIPTextModel keys after this prefix
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."  # open_clip text tower (fused qkv, resblocks)
UNET_PREFIX = "model.diffusion_model."
UNET_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"  # [first block channels, latent channels, 3, 3]
# keys a checkpoint may carry that the diffusers/transformers modules have no parameter for
_IGNORABLE_SUFFIXES = ("position_ids", "text_projection.weight")


def read_checkpoint(path: Path, *, allow_pickle: bool) -> dict[str, Any]:
    """Flat state dict of a .safetensors (header validated first) or, if allowed, a weights-only pickle."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors_header(path)
        return load_file(path, device="cpu")
    if path.suffix in PICKLE_SUFFIXES:
        state = load_pickle_weights(path, allow_pickle=allow_pickle)
        inner = state.get("state_dict")
        return inner if isinstance(inner, dict) else state
    raise ModelFolderError(f"{path}: unknown checkpoint type {path.suffix!r}; allowed: .safetensors, {PICKLE_SUFFIXES}")


def _fill(model: Any, state: dict[str, Any], what: str, path: Path, preset: ModelPreset) -> Any:
    """Load `state` into `model` (built on the meta device) requiring every parameter to be present."""
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORABLE_SUFFIXES)}
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise _preset_error(
            f"{path}: the {what} weights do not match preset {preset.name!r}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
            f"check that the preset names this checkpoint's architecture"
        )
    shapes = model.state_dict()
    wrong = [k for k in state if tuple(state[k].shape) != tuple(shapes[k].shape)]
    if wrong:
        k = wrong[0]
        raise _preset_error(
            f"{path}: {what} tensor {k} has shape {tuple(state[k].shape)}, preset {preset.name!r} "
            f"expects {tuple(shapes[k].shape)}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _preset_error(message: str) -> ModelFolderError:
    """An error whose fix is naming the architecture: the CLI adds "--preset" where the command has it."""
    err = ModelFolderError(message)
    names = ", ".join(p.name for p in PRESETS.values() if p.text_encoder == "clip")
    err.flag_hint = ("--preset", f"name it with --preset ({names})")
    return err


def _on_meta(build):
    """Construct a module without allocating or initialising weights (they are all overwritten)."""
    import torch

    with torch.device("meta"):
        return build()


def _text_state(checkpoint: dict[str, Any], template: Any, path: Path) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    if any(k.startswith(SD1_CLIP_PREFIX) for k in checkpoint):
        return convert_ldm_clip_checkpoint(checkpoint)
    if any(k.startswith(SD2_OPENCLIP_PREFIX) for k in checkpoint):
        return convert_open_clip_checkpoint(template, checkpoint, prefix=SD2_OPENCLIP_PREFIX)
    raise ModelFolderError(
        f"{path} holds no text encoder weights (no {SD1_CLIP_PREFIX}* or {SD2_OPENCLIP_PREFIX}* keys)"
    )


def _signature(checkpoint: dict[str, Any]) -> tuple[int, int, int] | None:
    """(first UNet channels, latent channels, cross-attention width) read from a checkpoint's tensor shapes."""
    conv_in = checkpoint.get(UNET_CONV_IN)
    context = next((v for k, v in checkpoint.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")),
                   None)
    if conv_in is None or context is None or conv_in.ndim != 4 or context.ndim != 2:
        return None
    return int(conv_in.shape[0]), int(conv_in.shape[1]), int(context.shape[1])


def infer_preset(checkpoint: dict[str, Any], path: Path) -> ModelPreset:
    """The one CLIP-conditioned preset whose UNet matches the checkpoint's shapes; an error naming the presets
    to choose from when none or several match. SD 2.x checkpoints give sd21 (768-v): a 512
    epsilon SD 2 base has the same shapes and cannot be told apart by them."""
    found = _signature(checkpoint)
    candidates = [p for p in PRESETS.values() if p.text_encoder == "clip"]
    names = ", ".join(p.name for p in candidates)
    convert = f"`ldmkit model convert {path} --preset NAME --out FOLDER` with NAME one of {names}"
    if found is None:
        raise _preset_error(f"{path}: cannot tell the architecture (no {UNET_CONV_IN} or cross-attention weights); "
                            f"name it, e.g. {convert}")
    matching = [p for p in candidates
                if (p.unet["block_out_channels"][0], p.unet["in_channels"], p.clip_text_config["hidden_size"]) == found]
    if len(matching) != 1:
        what = "none" if not matching else "several (" + ", ".join(p.name for p in matching) + ")"
        raise _preset_error(f"{path}: a UNet with {found[0]} first-block channels, {found[1]} latent channels and "
                            f"context width {found[2]} matches {what} of the presets; name the architecture, e.g. "
                            f"{convert}")
    return matching[0]


def load_single_file(
    path: str | Path, *, preset: str | ModelPreset | None = None, allow_pickle: bool = False, dtype: Any = None
) -> Components:
    """Components from one original-layout SD checkpoint, with the architectures of `preset` (None: inferred
    from the checkpoint's shapes, see `infer_preset`)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    p = get_preset(preset) if preset is not None else None
    if p is not None and p.text_encoder != "clip":
        raise ModelFolderError(f"preset {p.name!r} uses a {p.text_encoder} text encoder; single files hold CLIP")
    checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
    p = p or infer_preset(checkpoint, path)
    dtype = dtype or torch.float32
    # cast here: the modules take these tensors as they are (assign=True), so no module-level .to() is needed
    checkpoint = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint.items()}
    unet = _on_meta(lambda: UNet2DConditionModel(**p.unet))
    unet = _fill(unet, convert_ldm_unet_checkpoint(checkpoint, dict(unet.config)), "UNet", path, p)
    vae = _on_meta(lambda: AutoencoderKL(**p.vae))
    vae = _fill(vae, convert_ldm_vae_checkpoint(checkpoint, dict(vae.config)), "VAE", path, p)
    tokenizer = clip_tokenizer(p.clip_text_config["max_position_embeddings"], p.clip_pad_token)
    config = CLIPTextConfig(**p.clip_text_config)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
    )  # fmt: skip
    text_model = CLIPTextModel(config)  # real init: its non-persistent position_ids buffer must exist
    text_model = _fill(text_model, _text_state(checkpoint, text_model, path), "text encoder", path, p)
    meta = {"preset": p.name, "image_size": p.image_size, "text_encoder": "clip", "single_file": path.name}
    return Components(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=TextEncoder(text_model.to(dtype).eval(), tokenizer, "clip"),
        scheduler_config=dict(p.scheduler),
        meta=meta,
        source=path,
    )
