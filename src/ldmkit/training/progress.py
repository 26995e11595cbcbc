"""What a run reports while it trains: tqdm on stderr, metrics.jsonl, loss_curve.png, TensorBoard if installed.

Only the main process writes. metrics.jsonl gets one JSON object per log interval (step, means of
loss / lr / grad_norm / task metrics over the interval, samples_per_s, and the run's totals so far:
samples trained on and elapsed_s, the training loop's wall time summed over every resume) and one per
event ("event": "nonfinite_skip", ...). On resume, lines past the checkpoint's step are dropped so the
curve has no repeated steps, and elapsed_s continues from the last line kept.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
LOSS_CURVE = "loss_curve.png"
PLOT_EVERY_S = 30.0


def truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Drop metric lines with "step" > `step` (written before a crash, about to be redone); the rows kept."""
    if not path.is_file():
        return []
    kept, rows = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            if int(row.get("step", 0)) <= step:
                kept.append(line)
                rows.append(row)
        except (ValueError, TypeError, AttributeError):
            continue  # a line cut off by the crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
    return rows


def metrics_row(run_dir: Path, step: int) -> dict[str, Any] | None:
    """RUN_DIR/metrics.jsonl's interval row of `step` (not an event), or None."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut off by a crash
        if isinstance(row, dict) and row.get("step") == step and "event" not in row:
            return row
    return None


def _elapsed_so_far(rows: list[dict[str, Any]]) -> float:
    """elapsed_s of the last row that has one (0 for a new run or one logged before it existed)."""
    for row in reversed(rows):
        value = row.get("elapsed_s")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return 0.0


_PLOTS_OFF_SAID = []


def _say_plots_are_off() -> None:
    """Tell the user once per process that loss plots are off without matplotlib."""
    if not _PLOTS_OFF_SAID:
        _PLOTS_OFF_SAID.append(True)
        print("ldmkit: note: matplotlib is not installed, so loss plots are off (metrics.jsonl has every value); "
              "pip install 'ldmkit[data]' to get them", file=sys.stderr, flush=True)


def plot_loss_curve(metrics_path: Path, png_path: Path) -> None:
    """Draw loss against step from metrics.jsonl into a PNG (matplotlib Agg, imported here)."""
    steps, losses = [], []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row and isinstance(row["loss"], (int, float)) and math.isfinite(row["loss"]):
            steps.append(row["step"])
            losses.append(row["loss"])
    if not steps:
        return
    try:
        import matplotlib
    except ImportError:  # optional dependency (the `data` extra): no plot, metrics.jsonl still has it all
        _say_plots_are_off()
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if min(losses) > 0 and max(losses) / min(losses) > 20:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    save_figure(fig, png_path)


def save_figure(fig, png_path: Path) -> None:
    """Write a matplotlib figure atomically (temp file + rename: a reader never sees half a PNG), close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: tensorboard not installed
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class ProgressLog:
    """Progress bar + metrics file + loss-curve plot of one run (inactive on non-main processes)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        samples_per_step: int,
        log_every: int,
        enabled: bool,
        show_bar: bool,
    ) -> None:
        self.metrics_path = Path(run_dir) / METRICS
        self.png_path = Path(run_dir) / LOSS_CURVE
        self.total_steps, self.samples_per_step, self.log_every = total_steps, samples_per_step, log_every
        self.enabled = enabled
        self.pending: dict[str, list[float]] = {}
        self.pending_steps = 0
        self.last_time = self.began = time.perf_counter()
        self.elapsed_before = 0.0  # the wall time of earlier attempts of this run (resumed from a checkpoint)
        self.last_plot = 0.0
        self.tensorboard = None
        self.bar = None
        if not enabled:
            return
        self.elapsed_before = _elapsed_so_far(truncate_metrics(self.metrics_path, start_step))
        self.tensorboard = _tensorboard(Path(run_dir))
        if show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, file=sys.stderr, unit="step", dynamic_ncols=True)

    def update(self, step: int, logs: dict[str, float]) -> None:
        """Record the metrics of optimizer step `step`; write a line every `log_every` steps."""
        if not self.enabled:
            return
        for key, value in logs.items():
            self.pending.setdefault(key, []).append(float(value))
        self.pending_steps += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every == 0 or step == self.total_steps:
            self.flush(step)

    def retotal(self, total_steps: int) -> None:
        """The run now ends at `total_steps` (a time budget fitted it)."""
        self.total_steps = total_steps
        if self.bar is not None:
            self.bar.total = total_steps
            self.bar.refresh()

    def event(self, step: int, kind: str, **data: Any) -> None:
        """Write a one-off event line (e.g. a skipped non-finite step)."""
        if self.enabled:
            self._write({"step": step, "event": kind, **data})

    def flush(self, step: int) -> None:
        """Write the means since the last line, refresh the bar; redraw the plot every PLOT_EVERY_S."""
        if not self.enabled or not self.pending_steps:
            return
        now = time.perf_counter()
        row: dict[str, Any] = {"step": step}
        for key, values in self.pending.items():
            finite = [v for v in values if math.isfinite(v)]
            row[key] = sum(finite) / len(finite) if finite else None
        row["samples_per_s"] = self.pending_steps * self.samples_per_step / max(now - self.last_time, 1e-9)
        row["samples"] = step * self.samples_per_step
        row["elapsed_s"] = round(self.elapsed_before + now - self.began, 3)
        self._write(row)
        if self.bar is not None:
            loss = row.get("loss")
            shown = f"{loss:.4g}" if loss is not None else "nan"
            self.bar.set_postfix(loss=shown, samples_s=f"{row['samples_per_s']:.1f}")
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self.tensorboard.add_scalar(f"train/{key}", value, step)
        self.pending, self.pending_steps, self.last_time = {}, 0, now
        if now - self.last_plot >= PLOT_EVERY_S:
            self.plot()

    def plot(self) -> None:
        """Redraw loss_curve.png from metrics.jsonl."""
        if self.enabled and self.metrics_path.is_file():
            plot_loss_curve(self.metrics_path, self.png_path)
            self.last_plot = self.last_time = time.perf_counter()  # plotting is not training time

    def close(self, step: int) -> None:
        """Write what is pending, redraw the plot, close the bar."""
        if not self.enabled:
            return
        self.flush(step)
        self.plot()
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _write(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
