"""The NaN/Inf guard: find non-finite losses, gradients and weights; write diagnostics; stop after K in a row."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ldmkit.errors import LdmkitError
from ldmkit.training.checkpoint_files import write_json

DIAGNOSTICS = "nonfinite.json"


class NonFiniteError(LdmkitError):
    """Training stopped because losses, gradients or weights stayed non-finite (see nonfinite.json)."""


def nonfinite_grads(params: dict[str, nn.Parameter]) -> list[str]:
    """Names of parameters whose gradient holds a NaN or Inf."""
    return [name for name, p in params.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]


def nonfinite_weights(params: dict[str, nn.Parameter]) -> list[str]:
    """Names of parameters whose value holds a NaN or Inf."""
    return [name for name, p in params.items() if not bool(torch.isfinite(p).all())]


def describe_step(step: int, losses: list[float], params: dict[str, nn.Parameter]) -> dict:
    """What was non-finite at `step` (1-based optimizer step): the micro-batch losses and gradient names."""
    return {
        "step": step,
        "losses": [loss if math.isfinite(loss) else str(loss) for loss in losses],
        "nonfinite_loss": not all(math.isfinite(loss) for loss in losses),
        "nonfinite_grads": nonfinite_grads(params),
    }


def stop_with_diagnostics(run_dir: Path, report: dict, message: str, *, write: bool = True) -> NonFiniteError:
    """Write `report` to run_dir/nonfinite.json (main process: `write`) and return the error to raise."""
    path = Path(run_dir) / DIAGNOSTICS
    if write:
        write_json(path, report)
    return NonFiniteError(f"{message}; diagnostics written to {path}")
