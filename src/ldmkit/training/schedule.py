"""Optimizer and learning-rate schedule: AdamW, linear warm-up then constant or cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from ldmkit.config.training import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total: int | None = None) -> float:
    """Learning rate of optimizer step `step` (0-based) of a run of `total` steps (None: cfg.steps; a time
    budget fits a smaller one): a pure function, so resuming needs only the step and the total."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    decay_steps = max(1, (cfg.steps if total is None else total) - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `params`, the fused kernel when this torch build and device have one."""
    if not params:
        raise ValueError("the task has no trainable parameters (requires_grad=True)")
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # fused needs floating params on a supported device
        return torch.optim.AdamW(params, **kwargs)
