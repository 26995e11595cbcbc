"""Applying LoRA files to a pipeline's UNet and text encoder: unfused (forward hooks), fused, unloaded.

Unfused, every targeted Linear / Conv2d gets one forward hook that adds
`sum_i scale_i * alpha_i / rank_i * up_i(down_i(x))` to the module's output (the weighted sum of every loaded
file); the base weights are never touched, so `unload` restores the base model exactly. `fuse` adds the same sum
to the weights (W += scale * alpha / rank * up @ down) after keeping a copy of each touched weight, which
`unload` copies back bit for bit.

Why not peft here (training uses it, `ldmkit.training.lora_task`): peft's injection replaces modules (so names and `state_dict` keys change under the pipeline),
handles one set of adapter weights per name, and only knows diffusers/transformers module names; hooks leave the
module tree as it is, accept any number of kohya / PEFT / diffusers files at once and work on both text
encoders ldmkit ships (CLIP and MiniLM). The interop tests prove the result equals diffusers' own peft path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ldmkit.errors import UsageError
from ldmkit.models.lora_files import LoraFile, LoraLayer, check_scale, read_lora, resolve, target_modules

MAX_LOADED = 64  # files applied at once


@dataclass
class _Term:
    down: torch.Tensor
    up: torch.Tensor
    factor: float  # scale * alpha / rank


@dataclass
class LoraState:
    """The LoRA files loaded into one pipeline: what is hooked, what is fused, and how to undo it."""

    models: dict[str, Any]
    """part -> module ("unet", "text_encoder"): the models the files' parts are resolved against."""
    loaded: list[tuple[str, float]] = field(default_factory=list)
    """(source, scale) of every file loaded, in order (fused ones included)."""
    terms: dict[tuple[str, str], list[_Term]] = field(default_factory=dict)
    """(part, module name) -> the unfused updates its hook adds."""
    hooks: dict[tuple[str, str], Any] = field(default_factory=dict)
    originals: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    """(part, module name) -> the base weight before the first fuse (restored by unload)."""

    def __post_init__(self) -> None:
        if not isinstance(self.models, dict) or not self.models:
            raise ValueError("LoraState.models must map part names to modules")

    def _module(self, key: tuple[str, str]) -> torch.nn.Module:
        return target_modules(self.models[key[0]])[key[1]]

    def load(self, lora: LoraFile | str | Path, scale: float = 1.0) -> list[str]:
        """Apply one file (or a LoraFile already read) at `scale`, unfused; returns the reader's warnings.
        Every key is resolved and shape-checked before any module is touched."""
        scale = check_scale(scale)
        if not isinstance(lora, LoraFile):
            lora = read_lora(lora)
        if len(self.loaded) >= MAX_LOADED:
            raise UsageError(f"at most {MAX_LOADED} LoRA files at once")
        layers = resolve(lora, self.models)
        self.loaded.append((lora.source or "<memory>", scale))
        if scale == 0.0:  # the base model exactly: nothing is hooked
            return list(lora.warnings)
        for key, layer in layers.items():
            module = self._module(key)
            w = module.weight
            term = _Term(layer.down.to(w.device, w.dtype), layer.up.to(w.device, w.dtype), scale * layer.scale)
            self.terms.setdefault(key, []).append(term)
            if key not in self.hooks:
                self.hooks[key] = module.register_forward_hook(_hook(self.terms[key]))
        return list(lora.warnings)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold every unfused update into its module's weight (W += factor * up @ down) and drop the hooks;
        the first fuse of a weight keeps a copy of it for `unload`."""
        for key, terms in self.terms.items():
            w = self._module(key).weight
            if key not in self.originals:
                self.originals[key] = w.detach().clone()
            delta = sum(t.factor * LoraLayer(t.down, t.up, float(t.down.shape[0])).delta(torch.float32)
                        for t in terms)
            w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
        self._drop_hooks()

    @torch.no_grad()
    def unload(self) -> None:
        """Remove every loaded file: hooks off, fused weights restored bit for bit."""
        self._drop_hooks()
        for key, original in self.originals.items():
            self._module(key).weight.copy_(original)
        self.originals.clear()
        self.loaded.clear()

    def _drop_hooks(self) -> None:
        for handle in self.hooks.values():
            handle.remove()
        self.hooks.clear()
        self.terms.clear()


def _hook(terms: list[_Term]):
    def add_lora(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for t in terms:
            if isinstance(module, torch.nn.Conv2d):
                h = F.conv2d(x, t.down, None, module.stride, module.padding, module.dilation)
                output = output + F.conv2d(h, t.up) * t.factor
            else:
                output = output + F.linear(F.linear(x, t.down), t.up) * t.factor
        return output

    return add_lora


def pipeline_models(pipe: Any) -> dict[str, Any]:
    """The parts of an ldmkit Pipeline a LoRA file can target."""
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder.model}


def lora_state(pipe: Any) -> LoraState:
    """The LoraState of an ldmkit Pipeline (made on first use). A compiled UNet (compile=True freezes its weights
    into the graph) cannot take LoRA files."""
    state = getattr(pipe, "_lora_state", None)
    if state is None:
        if getattr(pipe, "_unet_forward", pipe.unet) is not pipe.unet:
            raise UsageError("LoRA files cannot be applied to a compiled UNet (--compile); load them without it")
        state = LoraState(pipeline_models(pipe))
        pipe._lora_state = state
    return state
