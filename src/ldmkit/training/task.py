"""What a component trainer gives the shared loop (`TrainTask`) and what the loop returns (`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class TrainTask(Protocol):
    """One thing to train (VAE, UNet, CLIP): its trainable modules, its data and its loss.

    The loop owns the optimizer, data order, devices, precision, EMA, checkpoints and RNG; a task
    never seeds anything itself and draws randomness only from the generator it is handed.
    Optional hooks the loop calls when present: `setup(device)` once before training (move frozen
    modules there), `validate(step, path)` on the main process (with EMA weights when EMA is on) and
    `export(step, path)` on the main process each time a checkpoint is written: it writes a usable
    result (e.g. a model folder) into a new folder `path` inside the checkpoint being assembled, before the
    checkpoint is sealed, with EMA weights in place when EMA is on. Resume never reads it.
    `param_groups()` replaces the one optimizer group of every trainable parameter by the task's own groups
    (each a dict with "params" and "lr_scale": that group's learning rate is lr_scale x the schedule's).
    """

    def modules(self) -> dict[str, nn.Module]:
        """The trainable modules by name (names become checkpoint file names; keep them stable)."""
        ...

    def num_samples(self) -> int:
        """Number of training samples; the loop draws ids in range(num_samples())."""
        ...

    def batch(self, ids: list[int], generator: torch.Generator) -> Any:
        """Build a batch (tensors on the CPU are fine: the loop moves them to the device)."""
        ...

    def loss(
        self, modules: dict[str, nn.Module], batch: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of `batch` and extra metrics to log, calling the modules passed in.

        `modules` holds the same modules as `modules()`, possibly wrapped (DDP, autocast): call
        these, not your own references, so gradients are synchronised across processes.
        """
        ...

    def save_final(self, path: Path) -> None:
        """Write the trained result (e.g. a model folder) to `path` (EMA weights are in place)."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What `train` did."""

    run_dir: Path
    """The run folder (checkpoints/, metrics.jsonl, loss_curve.png, config.yaml, run.json, final/)."""
    step: int
    """Optimizer steps completed when train() returned (skipped non-finite steps included)."""
    resumed_from_step: int | None
    """Step of the checkpoint this call resumed from; None for a fresh start."""
    interrupted: bool
    """True when SIGINT/SIGTERM stopped the run early (a checkpoint was saved first)."""
    nonfinite_skipped: int
    """Steps skipped over the whole run because the loss or a gradient was NaN/Inf."""
    samples_seen: int
    """Samples drawn over the whole run: step * batch_size * processes * grad_accum."""
    checkpoint: Path | None
    """Newest complete checkpoint folder, if any."""
    final_dir: Path | None
    """Where `save_final` wrote, when the run reached `steps`."""
