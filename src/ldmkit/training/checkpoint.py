"""What a checkpoint holds and how a run is put back exactly as it was.

Folder contents (see checkpoint_files for the atomic write):
  model.<name>.safetensors        weights of each trainable module (main process)
  ema.safetensors                 EMA weights, when EMA is on
  optimizer.safetensors / .json   AdamW tensors / param groups and scalars
  rng.rank<r>.safetensors / .json every RNG of process r (each process writes its own)
  state.json                      step, data position, non-finite counters, grad-scaler state
  model/                          what the task's `export` hook writes (UNet: a model folder that
                                  Pipeline.from_pretrained loads); never read on resume
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ldmkit.errors import LdmkitError
from ldmkit.training import checkpoint_files as files
from ldmkit.training.nonfinite import nonfinite_weights, stop_with_diagnostics
from ldmkit.training.rng import capture_rng, restore_rng
from ldmkit.training.sampler import DataPosition
from ldmkit.training.state import RunState, optimizer_from_tensors, optimizer_to_tensors


EXPORT = "model"
FINAL = "final"  # the loop's final model folder (ldmkit.training.loop.FINAL)
RESTART_HINT = "`ldmkit train resume {run} --restart` starts again from step 0 (keeping them, renamed)"


class CheckpointError(LdmkitError):
    """A checkpoint cannot be restored into this run (different model, processes, ...)."""


def save_checkpoint(run: RunState, export: Callable[[Path], None] | None = None) -> Path:
    """Save a complete checkpoint of `run` at its current step (all processes call this). Returns its folder.

    `export(path)`, when given, runs on the main process after the resume state is written and
    before the COMPLETE marker, with path = <temporary folder>/model: what it writes appears with
    the checkpoint or not at all.
    """
    acc = run.accelerator
    bad = nonfinite_weights(run.trainable_parameters)
    if bad:  # never checkpoint broken weights: the previous checkpoint stays the newest
        raise stop_with_diagnostics(
            run.run_dir, {"step": run.step, "nonfinite_weights": bad}, f"non-finite weights at step {run.step}",
            write=acc.is_main_process,
        )
    final = run.run_dir / files.CHECKPOINTS / files.checkpoint_name(run.step)
    if files.is_complete(final):  # e.g. interrupted right after a scheduled checkpoint
        return final
    tmp = files.temporary_dir(run.run_dir, run.step)
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash during an earlier attempt at this step
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    rng_tensors, rng_meta = capture_rng(run.generator)
    files.write_tensors(tmp / f"rng.rank{acc.process_index}.safetensors", rng_tensors)
    files.write_json(tmp / f"rng.rank{acc.process_index}.json", rng_meta)
    if acc.is_main_process:
        for name, module in run.modules.items():
            files.write_tensors(tmp / f"model.{name}.safetensors", module.state_dict())
        if run.ema is not None:
            files.write_tensors(tmp / "ema.safetensors", run.ema.state_tensors())
        opt_tensors, opt_meta = optimizer_to_tensors(run.optimizer.state_dict())
        files.write_tensors(tmp / "optimizer.safetensors", opt_tensors)
        files.write_json(tmp / "optimizer.json", opt_meta)
        files.write_json(tmp / "state.json", _scalars(run))
        if export is not None:
            export(tmp / EXPORT)
            if (tmp / EXPORT).exists():
                files.fsync_tree(tmp / EXPORT)
    acc.wait_for_everyone()
    if acc.is_main_process:
        files.seal(tmp, run.step)
        files.prune(run.run_dir, run.cfg.keep_last)
    acc.wait_for_everyone()
    return final


def restore_checkpoint(run: RunState, folder: Path) -> None:
    """Load every piece of state saved by `save_checkpoint` into `run` (modules already prepared)."""
    state = files.read_json(folder / "state.json")
    if state["num_processes"] != run.accelerator.num_processes:
        raise CheckpointError(
            f"{folder} was written by {state['num_processes']} processes, this run has "
            f"{run.accelerator.num_processes}; resume with the same number of processes"
        )
    if sorted(state["modules"]) != sorted(run.modules) or state["ema"] != (run.ema is not None):
        raise CheckpointError(
            f"{folder} holds modules {sorted(state['modules'])} (ema={state['ema']}), the task trains "
            f"{sorted(run.modules)} (ema={run.ema is not None})"
        )
    for name, module in run.modules.items():
        path = folder / f"model.{name}.safetensors"
        try:
            module.load_state_dict(files.read_tensors(path), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit module {name!r}: {exc}") from exc
    if run.ema is not None:
        run.ema.load_state_tensors(files.read_tensors(folder / "ema.safetensors"))
    opt_state = optimizer_from_tensors(
        files.read_tensors(folder / "optimizer.safetensors"), files.read_json(folder / "optimizer.json")
    )
    run.optimizer.load_state_dict(opt_state)
    rank = run.accelerator.process_index
    restore_rng(
        files.read_tensors(folder / f"rng.rank{rank}.safetensors"),
        files.read_json(folder / f"rng.rank{rank}.json"),
        run.generator,
    )
    run.step = state["step"]
    run.order.position = DataPosition(**state["data_position"])
    run.nonfinite_in_a_row = state["nonfinite_in_a_row"]
    run.nonfinite_total = state["nonfinite_total"]
    run.scaler_skips = state["scaler_skips"]
    run.fitted_steps = state.get("fitted_steps")  # absent in checkpoints of runs without a time budget
    scaler = run.accelerator.scaler
    if scaler is not None and state["grad_scaler"] is not None:
        scaler.load_state_dict(state["grad_scaler"])


def note(message: str) -> None:
    """One line for the user on stderr (resume decisions)."""
    print(f"ldmkit: note: {message}", file=sys.stderr, flush=True)


def refuse_unverifiable(run_dir: Path) -> tuple[files.Verdict | None, list[files.Verdict]]:
    """`files.survey(run_dir)`, raising CheckpointError (listing what was found, changing nothing) when
    checkpoints or final/ exist but no checkpoint verifies. Read-only: trainers call it before any work."""
    run_dir = Path(run_dir)
    best, rejected = files.survey(run_dir)
    if best is None and (rejected or (run_dir / FINAL).exists()):
        found = [f"{v.folder.name} ({v.problem})" for v in rejected[:5]] + (
            [f"{len(rejected) - 5} more"] if len(rejected) > 5 else [])
        if (run_dir / FINAL).exists():
            found.append(f"{FINAL}/ (a finished model)")
        raise CheckpointError(f"cannot resume {run_dir}: no checkpoint verifies; found {', '.join(found)}; "
                              f"nothing was changed. " + RESTART_HINT.format(run=run_dir))
    return best, rejected


def find_resume_point(run_dir: Path, accelerator: Any) -> tuple[int, Path] | None:
    """(step, folder) of the newest checkpoint that verifies (SHA-256 per file), or None for a fresh run.

    Newer checkpoints that do not verify are renamed aside (never deleted) and the fallback is said in one
    line. When checkpoints (or final/) exist but none verifies, raises CheckpointError listing them and
    changes nothing: starting over takes `restart_run` (`ldmkit train resume RUN --restart`).
    Every process checks (read-only, same answer); the main process renames.
    """
    best, rejected = refuse_unverifiable(run_dir)
    if best is None:
        return None
    accelerator.wait_for_everyone()  # every process has read before anything is renamed
    if accelerator.is_main_process:
        kept = [files.set_aside(v.folder).name for v in rejected if files.sealed_by_ldmkit(v.folder)]
        if rejected:
            why = "; ".join(f"{v.folder.name}: {v.problem}" for v in rejected[:3])
            aside = f"; kept as {', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}" if kept else ""
            note(f"resuming from {best.folder.name}, the newest checkpoint that verifies ({why}{aside})")
        if not best.hashed:
            note(f"{best.folder.name} was written without SHA-256 hashes (an older ldmkit): checked by file size only")
    accelerator.wait_for_everyone()
    return best.step, best.folder


def restart_run(run_dir: Path) -> list[Path]:
    """For `train resume --restart`: set aside every checkpoint folder and final/ so the run starts at step 0.

    Refused when a checkpoint verifies (resume from it instead). Nothing is deleted; returns the new names.
    """
    best, rejected = files.survey(run_dir)
    if best is not None:
        raise CheckpointError(f"--restart: {best.folder} verifies, so `ldmkit train resume {run_dir}` continues "
                              "from it; to start over, train into a new --out folder")
    moved = [files.set_aside(v.folder) for v in rejected]
    if (run_dir / FINAL).exists():
        moved.append(files.set_aside(run_dir / FINAL))  # final.unverified: trained from checkpoints now unusable
    if not moved:
        raise CheckpointError(f"--restart: {run_dir} has no checkpoint and no {FINAL}/ to set aside; "
                              f"`ldmkit train resume {run_dir}` starts it from step 0 as it is")
    note(f"starting {run_dir} again from step 0; kept " + ", ".join(p.relative_to(run_dir).as_posix() for p in moved))
    return moved


def _scalars(run: RunState) -> dict:
    scaler = run.accelerator.scaler
    return {
        "step": run.step,
        "data_position": {"epoch": run.order.position.epoch, "index": run.order.position.index},
        "nonfinite_in_a_row": run.nonfinite_in_a_row,
        "nonfinite_total": run.nonfinite_total,
        "scaler_skips": run.scaler_skips,
        "fitted_steps": run.fitted_steps,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "num_processes": run.accelerator.num_processes,
        "modules": sorted(run.modules),
        "ema": run.ema is not None,
    }
