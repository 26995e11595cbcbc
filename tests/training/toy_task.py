"""A tiny TrainTask for the loop's tests: an MLP regressing fixed synthetic data.

Its randomness deliberately touches every RNG the loop must restore: the task generator (input
noise), torch's global RNG (dropout), Python's `random` and NumPy's global RNG (loss weights).
Run as a script (also under `accelerate launch`): `python toy_task.py RUN_DIR [key=value ...]`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ToyTask:
    """y = f(x) regression. Counting loss calls from 1: `kill_at_call` SIGKILLs the process,
    `interrupt_at_call` sends it SIGINT, `nan_at_calls` make the loss NaN, `nan_grad_at_calls` keep
    the loss finite but make one gradient NaN."""

    def __init__(
        self,
        *,
        n: int = 40,
        dim: int = 6,
        noisy: bool = True,
        nan_at_calls: tuple[int, ...] = (),
        nan_grad_at_calls: tuple[int, ...] = (),
        kill_at_call: int | None = None,
        interrupt_at_call: int | None = None,
        ids_log: Path | None = None,
    ) -> None:
        data = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=data)
        self.y = torch.sin(self.x @ torch.randn(dim, 2, generator=data))
        with torch.random.fork_rng():
            torch.manual_seed(7)
            self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Dropout(0.2 if noisy else 0.0), nn.Linear(16, 2))
        self.noisy, self.nan_at_calls, self.nan_grad_at_calls = noisy, set(nan_at_calls), set(nan_grad_at_calls)
        self.kill_at_call, self.interrupt_at_call = kill_at_call, interrupt_at_call
        self.ids_log = ids_log
        self.calls = 0
        self.validated: list[int] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def num_samples(self) -> int:
        return len(self.x)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.ids_log is not None:
            with open(self.ids_log, "a") as f:
                f.write(json.dumps(ids) + "\n")
        x = self.x[ids]
        if self.noisy:
            x = x + 0.05 * torch.randn(x.shape, generator=generator)
        return {"x": x, "y": self.y[ids]}

    def loss(self, modules, batch, generator):
        self.calls += 1
        if self.calls == self.kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.calls == self.interrupt_at_call:
            os.kill(os.getpid(), signal.SIGINT)
        err = (modules["net"](batch["x"]) - batch["y"]).pow(2).mean()
        if self.noisy:
            err = err * (1.0 + 0.01 * random.random() + 0.01 * float(np.random.rand()))
        if self.calls in self.nan_at_calls:
            err = err * float("nan")
        if self.calls in self.nan_grad_at_calls:  # finite loss, NaN gradient on the last bias only
            err = err + 0.0 * torch.sqrt(self.net[3].bias * 0.0).sum()
        return err, {"mse": float(err.detach())}

    def validate(self, step: int, path: Path) -> None:
        torch.randn(3)  # validation may use global RNGs: the loop must isolate it
        random.random()
        self.validated.append(step)

    def save_final(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path / "net.safetensors"))


def main(argv: list[str]) -> int:
    """`toy_task.py RUN_DIR key=value ...`: TrainConfig fields plus task options (noisy, ids_log)."""
    from ldmkit.config import TrainConfig, apply_overrides, from_dict
    from ldmkit.training import train

    torch.set_num_threads(1)
    run_dir, pairs = Path(argv[0]), argv[1:]
    task_keys = {"noisy", "ids_log", "n", "kill_at_call"}
    task_args = dict(p.split("=", 1) for p in pairs if p.split("=", 1)[0] in task_keys)
    overrides = [p for p in pairs if p.split("=", 1)[0] not in task_keys]
    cfg = from_dict(TrainConfig, apply_overrides(TrainConfig, {}, overrides))
    rank = int(os.environ.get("RANK", "0"))
    ids_log = Path(f"{task_args['ids_log']}.rank{rank}") if "ids_log" in task_args else None
    kill = int(task_args["kill_at_call"]) if "kill_at_call" in task_args else None
    task = ToyTask(noisy=task_args.get("noisy", "1") == "1", ids_log=ids_log, n=int(task_args.get("n", 40)),
                   kill_at_call=kill)
    result = train(task, cfg, run_dir)
    if rank == 0:
        print(json.dumps({"step": result.step, "samples_seen": result.samples_seen}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def run_in_child(fn, *args) -> int:
    """Run fn(*args) in a forked child (imports shared, so it starts at once); return its exit code.

    A child killed by SIGKILL returns -9.
    """
    import multiprocessing

    import pytest

    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this test process: forking it is unsafe")
    process = multiprocessing.get_context("fork").Process(target=_child, args=(fn, *args))
    process.start()
    process.join(120)
    if process.is_alive():
        process.kill()
        raise TimeoutError("training child did not finish in 120 s")
    return process.exitcode


def _child(fn, *args) -> None:
    fn(*args)
    os._exit(0)


def checkpoint_contents(folder: Path) -> dict[str, object]:
    """Every tensor and JSON value of a checkpoint folder, keyed by file (to compare runs bitwise)."""
    from safetensors.torch import load_file

    contents: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            for key, tensor in load_file(str(path)).items():
                contents[f"{path.name}:{key}"] = tensor
        elif path.suffix == ".json" and path.name != "COMPLETE":
            contents[path.name] = json.loads(path.read_text())
    return contents


def assert_same_contents(a: dict[str, object], b: dict[str, object]) -> None:
    """Bitwise equality of two `checkpoint_contents` results."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{key} differs"
        else:
            assert a[key] == b[key], f"{key} differs"


def kill_at_loss_call(task, n: int | None):
    """Make `task.loss` kill this process at its n-th call (nothing when n is None); returns task."""
    if n is None:
        return task
    loss, calls = task.loss, [0]

    def killing_loss(*args):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss(*args)

    task.loss = killing_loss
    return task
