"""The one training loop every component trainer uses: `train(task, cfg, run_dir)`.

accelerate underneath (device, mixed precision, gradient accumulation, DDP across processes);
AdamW with warm-up + constant/cosine; gradient clipping; EMA; atomic checkpoints every N steps and
on SIGINT/SIGTERM; exact resume from the newest complete checkpoint; a NaN/Inf guard that skips the
step and stops after K in a row. See TrainTask for what a component provides.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ldmkit.config.training import TrainConfig
from ldmkit.cpu_threads import training_governor
from ldmkit.errors import UsageError
from ldmkit.training import time_budget
from ldmkit.training.checkpoint import find_resume_point, restore_checkpoint, save_checkpoint
from ldmkit.training.checkpoint_files import checkpoint_name
from ldmkit.training.ema import EMA
from ldmkit.training.nonfinite import describe_step, stop_with_diagnostics
from ldmkit.training.processes import cpu_processes, launched_processes
from ldmkit.training.progress import ProgressLog
from ldmkit.training.rng import isolated_rng, seed_everything
from ldmkit.training.run_folder import check_resumable, record_run
from ldmkit.training.sampler import DataOrder
from ldmkit.training.schedule import build_optimizer, lr_at
from ldmkit.training.signals import StopSignals
from ldmkit.training.state import RunState
from ldmkit.training.task import TrainResult, TrainTask
from ldmkit.training.time_budget import TimeBudget, loop_deadline

FINAL = "final"


def train(task: TrainTask, cfg: TrainConfig, run_dir: str | Path, *, recipe: Any = None,
          deadline: float | None = None) -> TrainResult:
    """Train `task` to `cfg.steps` in `run_dir`, resuming from its newest complete checkpoint if any.

    `recipe` (any dataclass) is stored as the run's resolved config.yaml; default: `cfg`. `deadline` (a
    `time_budget.now()` value, e.g. a recipe stage's share of its budget) and `cfg.max_minutes` fit the step
    count to the time left (ldmkit.training.time_budget).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _deterministic(cfg.deterministic), StopSignals() as stop:
        run, resumed_from = _start(task, cfg, run_dir, recipe)
        start_step = run.step
        acc = run.accelerator
        log = ProgressLog(run_dir, total_steps=cfg.steps, start_step=run.step, samples_per_step=run.samples_per_step,
                          log_every=cfg.log_every, enabled=acc.is_main_process, show_bar=cfg.progress_bar)
        budget = _time_budget(run, log, deadline)
        log.retotal(run.total_steps)  # a resumed budgeted run keeps its fitted count until it fits again
        if budget is None:
            _say_ema_shortfall(run, log)  # a budgeted run says it when the budget fits its count
        governor = training_governor(cfg.deterministic, acc.device.type)  # threads = cores others leave free
        try:
            if budget is not None:
                _follow_budget(run, budget, log, refit=False)  # a deadline already past: no step starts
            while run.step < run.total_steps and not _stop_requested(run, stop):
                logs = _optimizer_step(run, task, log)
                if governor is not None:
                    logs["threads"] = governor.poll()  # metrics.jsonl shows how many the step after this gets
                log.update(run.step, logs)
                refit = False
                if budget is not None:
                    budget.step_done(run.step, start_step)
                if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
                    with _timed(budget, "checkpoint"):
                        save_checkpoint(run, _exporter(run, task))
                    refit = True
                if cfg.validate_every and run.step % cfg.validate_every == 0:
                    log.flush(run.step)  # metrics.jsonl has this step's samples and wall time for the eval row
                    with _timed(budget, "validation"):
                        _validate(run, task)
                    refit = True
                if budget is not None:
                    _follow_budget(run, budget, log, refit=refit)
            if (budget is not None and cfg.validate_every and run.step % cfg.validate_every
                    and start_step < run.step == run.total_steps < cfg.steps):
                log.flush(run.step)  # the budget ended the run early: validate the model it ends with
                _validate(run, task)
            checkpoint = save_checkpoint(run, _exporter(run, task)) if run.step > 0 else None
            final_dir = None
            if run.step >= run.total_steps and (run.step > start_step or not (run_dir / FINAL).exists()):
                final_dir = _save_final(run, task)
            elif run.step >= run.total_steps:
                final_dir = run_dir / FINAL
        finally:
            log.close(run.step)
            if governor is not None:
                governor.restore()
    return TrainResult(
        run_dir=run_dir, step=run.step, resumed_from_step=resumed_from, interrupted=run.step < run.total_steps,
        nonfinite_skipped=run.nonfinite_total, samples_seen=run.step * run.samples_per_step,
        checkpoint=checkpoint, final_dir=final_dir,
    )


def _start(task: TrainTask, cfg: TrainConfig, run_dir: Path, recipe: Any) -> tuple[RunState, int | None]:
    """Build accelerator, optimizer, EMA and data order; restore the newest complete checkpoint."""
    acc = _accelerator(cfg)
    modules = dict(task.modules())
    if hasattr(task, "setup"):
        task.setup(acc.device)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    if hasattr(task, "param_groups"):  # per-part peak learning rates: groups with an "lr_scale" (x cfg.lr)
        params = task.param_groups()
    *wrapped, optimizer = acc.prepare(*modules.values(), build_optimizer(params, cfg))
    for module in modules.values():
        module.train()
    run = RunState(
        cfg=cfg, run_dir=run_dir, accelerator=acc, modules=modules, wrapped=dict(zip(modules, wrapped)),
        optimizer=optimizer, ema=EMA(modules, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_enabled else None,
        order=DataOrder(task.num_samples(), seed=cfg.seed, batch_size=cfg.batch_size,
                        rank=acc.process_index, world_size=acc.num_processes),
        generator=seed_everything(cfg.seed, acc.process_index),
    )
    found = find_resume_point(run_dir, acc)  # verifies SHA-256; refuses when checkpoints exist but none verifies
    resumed_from = None
    if found is not None:
        check_resumable(run_dir, cfg, acc.num_processes)
        restore_checkpoint(run, found[1])
        resumed_from = found[0]
        for group, fresh in zip(optimizer.param_groups, params if hasattr(task, "param_groups") else ()):
            group["lr_scale"] = fresh["lr_scale"]  # the recipe's per-part rates, as train.lr is the recipe's
    acc.wait_for_everyone()
    if acc.is_main_process:
        record_run(run_dir, cfg, recipe, num_processes=acc.num_processes, resumed_from=resumed_from)
    return run, resumed_from


def _optimizer_step(run: RunState, task: TrainTask, log: ProgressLog) -> dict[str, float]:
    """One optimizer step over grad_accum micro-batches; a non-finite loss/gradient skips it."""
    from accelerate.utils import send_to_device

    acc, cfg = run.accelerator, run.cfg
    lr = lr_at(run.step, cfg, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    losses: list[float] = []
    extra: dict[str, list[float]] = {}
    for _ in range(cfg.grad_accum):
        batch = send_to_device(task.batch(run.order.next_batch(), run.generator), acc.device)
        with acc.accumulate(*run.wrapped.values()):  # no DDP all-reduce until the last micro-batch
            with _forward_context(acc, cfg):
                loss, metrics = task.loss(run.wrapped, batch, run.generator)
            acc.backward(loss)  # divides by grad_accum; scales the loss under fp16
        losses.append(float(loss.detach()))
        for key, value in metrics.items():
            extra.setdefault(key, []).append(float(value))
    params = run.trainable_parameters
    acc.unscale_gradients()  # fp16: true gradients before the norm (no-op otherwise)
    grads = [p.grad for p in params.values() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=acc.device)
    flags = torch.tensor([not all(map(math.isfinite, losses)), not bool(torch.isfinite(grad_norm))], device=acc.device)
    if acc.num_processes > 1:
        flags = acc.reduce(flags.float(), reduction="sum") > 0  # every process skips together
    bad_loss, bad_grad = bool(flags[0]), bool(flags[1])
    logs = {"loss": sum(losses) / len(losses), "lr": lr, "grad_norm": float(grad_norm)}
    logs.update({key: sum(v) / len(v) for key, v in extra.items()})
    if bad_loss or (bad_grad and acc.scaler is None):
        _skip_nonfinite(run, describe_step(run.step + 1, losses, params), log)
        return logs
    if cfg.grad_clip > 0 and not bad_grad:  # after the finiteness check, so a NaN does not smear over every gradient
        torch.nn.utils.clip_grads_with_norm_(list(params.values()), cfg.grad_clip, grad_norm)
    run.optimizer.step()  # under fp16 the grad scaler may skip it on overflow (not an error)
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    if acc.scaler is not None and run.optimizer.step_was_skipped:
        run.scaler_skips += 1
    else:
        run.nonfinite_in_a_row = 0
        if run.ema is not None:
            run.ema.update(run.step)
    return logs


def _skip_nonfinite(run: RunState, report: dict, log: ProgressLog) -> None:
    """Leave weights, optimizer and EMA untouched; count the step; stop after K in a row."""
    acc = run.accelerator
    run.optimizer.zero_grad(set_to_none=True)
    if acc.scaler is not None:
        acc.scaler.update()  # the grads were unscaled; the scaler must close its iteration
    run.step += 1
    run.nonfinite_in_a_row += 1
    run.nonfinite_total += 1
    run.nonfinite_reports = [*run.nonfinite_reports, report][-run.cfg.max_nonfinite_in_a_row :]
    details = {k: v for k, v in report.items() if k != "step"}
    log.event(run.step, "nonfinite_skip", in_a_row=run.nonfinite_in_a_row, **details)
    if run.nonfinite_in_a_row >= run.cfg.max_nonfinite_in_a_row:
        raise stop_with_diagnostics(
            run.run_dir,
            {"stopped_at_step": run.step, "in_a_row": run.nonfinite_in_a_row, "total": run.nonfinite_total,
             "steps": run.nonfinite_reports},
            f"{run.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient (step {run.step})",
            write=acc.is_main_process,
        )


def _validate(run: RunState, task: TrainTask) -> None:
    """Call task.validate on the main process with EMA weights, without touching training RNG state."""
    validate = getattr(task, "validate", None)
    if validate is None:
        return
    acc = run.accelerator
    if acc.is_main_process:
        with isolated_rng(run.generator), _ema_weights(run.ema), torch.no_grad():
            for module in run.modules.values():
                module.eval()
            validate(run.step, run.run_dir / "validation" / checkpoint_name(run.step))
            for module in run.modules.values():
                module.train()
    acc.wait_for_everyone()


def _exporter(run: RunState, task: TrainTask) -> Callable[[Path], None] | None:
    """task.export wrapped like validation: EMA weights in place, training RNG state untouched."""
    export = getattr(task, "export", None)
    if export is None:
        return None

    def run_export(path: Path) -> None:
        with isolated_rng(run.generator), _ema_weights(run.ema), torch.no_grad():
            export(run.step, path)

    return run_export


def _save_final(run: RunState, task: TrainTask) -> Path:
    path = run.run_dir / FINAL
    if run.accelerator.is_main_process:
        with _ema_weights(run.ema):
            task.save_final(path)
    run.accelerator.wait_for_everyone()
    return path


def _time_budget(run: RunState, log: ProgressLog, deadline: float | None) -> TimeBudget | None:
    """This attempt's TimeBudget, or None (then the run ends at cfg.steps whatever an earlier attempt fitted)."""
    cfg = run.cfg
    end = loop_deadline(cfg.max_minutes, log.elapsed_before, deadline)
    if end is None:
        run.fitted_steps = None
        return None
    return TimeBudget(deadline=end, cap=cfg.steps, validate_every=cfg.validate_every,
                      checkpoint_every=cfg.checkpoint_every)


@contextlib.contextmanager
def _timed(budget: TimeBudget | None, kind: str) -> Iterator[None]:
    began = time_budget.now()
    yield
    if budget is not None:
        budget.overhead(kind, time_budget.now() - began)


def _follow_budget(run: RunState, budget: TimeBudget, log: ProgressLog, *, refit: bool) -> None:
    """Stop now when the deadline has passed; fit the step count once calibrated and again after each
    validation / checkpoint. Every process ends at the same (smallest) count."""
    total, first_fit = run.total_steps, False
    if budget.expired():
        total = run.step
    elif budget.calibrated(run.step) and (refit or budget.fits == 0):
        first_fit = budget.fits == 0
        total = budget.fit(run.step)
    acc = run.accelerator
    if acc.num_processes > 1:
        total = int(acc.gather(torch.tensor([total], device=acc.device)).min().item())
    if total == 0:
        raise UsageError(f"{run.run_dir}: the time budget ran out before the first training step (what came "
                         "before it, e.g. building caches, took the time); nothing was trained: give more time")
    if total == run.total_steps and not first_fit:
        return
    rate = budget.seconds_per_step(run.step) if budget.timed_from is not None else None
    log.event(run.step, "time_budget", total_steps=total, left_s=round(budget.deadline - time_budget.now(), 1),
              s_per_step=None if rate is None else round(rate, 4))
    run.fitted_steps = total
    log.retotal(total)
    _say_ema_shortfall(run, log)


def _say_ema_shortfall(run: RunState, log: ProgressLog) -> None:
    """Tell the user (once a run, stderr and metrics.jsonl) when the run ends before its EMA warm-up reaches
    train.ema_decay: then the decay setting has no effect on this run."""
    message = run.cfg.ema_shortfall(run.total_steps)
    if message is None or run.ema_shortfall_said or run.step >= run.total_steps:
        return
    run.ema_shortfall_said = True
    log.event(run.step, "ema_shortfall", total_steps=run.total_steps, message=message)
    if run.accelerator.is_main_process:
        print(f"ldmkit: note: {message}", file=sys.stderr, flush=True)


def _stop_requested(run: RunState, stop: StopSignals) -> bool:
    acc = run.accelerator
    if acc.num_processes == 1:
        return stop.requested
    flag = acc.reduce(torch.tensor([float(stop.requested)], device=acc.device), reduction="sum")
    return bool(flag.item() > 0)  # one process signalled: all stop at the same step


def _ema_weights(ema: EMA | None) -> contextlib.AbstractContextManager:
    return ema.applied() if ema is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _forward_context(acc: Any, cfg: TrainConfig) -> Iterator[None]:
    """accelerate's autocast around the forward; on a CPU under bf16 also the math attention kernel.

    torch's CPU flash-attention backward in bf16 is slow at these sizes: 130 ms of a 437 ms small64
    UNet step (batch 32), against 36 ms in fp32. The math path (bmm + softmax, bf16 matmuls) made the
    whole bf16 small64 step 4-12% faster (4% slower at 3x its width); in fp32 it is 10% slower, so fp32
    keeps the flash kernel (benchmarks/unet_step.py measures both). The kernel is picked in the forward
    and its backward follows.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(acc.autocast())
        if cfg.mixed_precision == "bf16" and acc.device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def _accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps process-wide singletons that refuse a second precision setting; one process
    # may train several components (VAE then UNet, tests), so forget the previous settings. The
    # process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    launched = launched_processes()
    acc = Accelerator(cpu=cpu_processes(), mixed_precision=cfg.mixed_precision,
                      gradient_accumulation_steps=cfg.grad_accum, step_scheduler_with_optimizer=False)
    if acc.num_processes != launched:
        raise UsageError(f"launched with WORLD_SIZE={launched} but accelerate set up {acc.num_processes} process(es)")
    return acc


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """torch deterministic algorithms for the duration of the run (restored afterwards)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    previous, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.benchmark = benchmark
