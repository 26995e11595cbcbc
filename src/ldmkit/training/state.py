"""Everything a run carries between steps (`RunState`) and the optimizer state as tensors + JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldmkit.config.training import TrainConfig
from ldmkit.training.ema import EMA
from ldmkit.training.sampler import DataOrder


@dataclass
class RunState:
    """The live objects of one training run on one process."""

    cfg: TrainConfig
    """The run's settings."""
    run_dir: Path
    """The run folder."""
    accelerator: Any
    """The accelerate.Accelerator (device, precision, processes)."""
    modules: dict[str, nn.Module]
    """Trainable modules, unwrapped (what is saved)."""
    wrapped: dict[str, nn.Module]
    """The same modules as prepared by accelerate (DDP / autocast); what the task's loss calls."""
    optimizer: Any
    """The prepared optimizer (accelerate's wrapper around torch AdamW)."""
    ema: EMA | None
    """EMA of the trainable weights, when cfg.ema_decay > 0."""
    order: DataOrder
    """Sample order and position."""
    generator: torch.Generator
    """The generator handed to the task (per process)."""
    step: int = 0
    """Optimizer steps done (skipped ones included)."""
    nonfinite_in_a_row: int = 0
    """Consecutive steps skipped for non-finite loss/gradients up to now."""
    nonfinite_total: int = 0
    """All steps skipped for non-finite loss/gradients."""
    scaler_skips: int = 0
    """fp16 steps the gradient scaler skipped for overflowing gradients (not counted as non-finite)."""
    nonfinite_reports: list[dict] = field(default_factory=list)
    """What was non-finite in the latest skipped steps (written to nonfinite.json when the run stops)."""
    fitted_steps: int | None = None
    """The step count a time budget fitted (ldmkit.training.time_budget); None: cfg.steps."""
    ema_shortfall_said: bool = False
    """Whether the user was told that this run ends before its EMA warm-up reaches train.ema_decay."""

    def __post_init__(self) -> None:
        if self.step < 0:
            raise ValueError(f"RunState.step must be >= 0, got {self.step}")

    @property
    def total_steps(self) -> int:
        """Where this run ends: cfg.steps, or less when a time budget fitted fewer."""
        return self.cfg.steps if self.fitted_steps is None else min(self.fitted_steps, self.cfg.steps)

    @property
    def samples_per_step(self) -> int:
        """Samples drawn by all processes together per optimizer step."""
        return self.cfg.batch_size * self.cfg.grad_accum * self.accelerator.num_processes

    @property
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters keyed "module.parameter"."""
        return {
            f"{name}.{pname}": p
            for name, module in self.modules.items()
            for pname, p in module.named_parameters()
            if p.requires_grad
        }


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state_dict into tensors ("state.<param>.<key>") and JSON scalars."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_tensors`: a state_dict for `Optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}
