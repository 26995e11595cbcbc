"""Exponential moving average of the trainable weights (kept in float32 beside the model)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ldmkit.config.training import ema_warmup_decay


class EMA:
    """shadow <- d * shadow + (1 - d) * weight after every optimizer step taken; d = ema_warmup_decay(decay, step)
    with the warm-up (ldmkit.config.training), `decay` from the first step without it."""

    def __init__(self, modules: dict[str, nn.Module], decay: float, *, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.params = {
            f"{name}.{pname}": p
            for name, module in modules.items()
            for pname, p in module.named_parameters()
            if p.requires_grad
        }
        self.shadow = {key: p.detach().float().clone() for key, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the shadow weights towards the current weights; `step` is the optimizer step just taken
        (1 for the first), which the warm-up needs and which exact resume restores with the loop state."""
        shadows = list(self.shadow.values())
        weights = [p.detach().float() for p in self.params.values()]
        decay = ema_warmup_decay(self.decay, step - 1) if self.warmup else self.decay
        torch._foreach_lerp_(shadows, weights, 1.0 - decay)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The shadow weights keyed "module.parameter" (for a checkpoint)."""
        return self.shadow

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore shadow weights saved by `state_tensors` (same keys required)."""
        if set(tensors) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(tensors))[:5]
            extra = sorted(set(tensors) - set(self.shadow))[:5]
            raise ValueError(f"EMA state does not match the model: missing {missing}, unexpected {extra}")
        for key, value in tensors.items():
            self.shadow[key].copy_(value)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the model; the training weights come back bitwise."""
        backup = {key: p.detach().clone() for key, p in self.params.items()}
        with torch.no_grad():
            for key, p in self.params.items():
                p.copy_(self.shadow[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, p in self.params.items():
                    p.copy_(backup[key])
