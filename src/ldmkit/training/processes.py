"""Several training processes on one run folder (`accelerate launch --num_processes N`).

    with main_process_first():      # process 0 builds the dataset and the latent cache, the others
        task = UNetTask(recipe, run_dir)  # then open what it wrote instead of racing it

Single-process runs never touch torch.distributed here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_processes() -> bool:
    """Whether a multi-process launch must join its processes on the CPU (gloo).

    Without cpu=True, accelerate treats a multi-process launch on a machine with no GPU as
    single-process: every process would train alone. ACCELERATE_USE_CPU=true forces the CPU beside a GPU.
    """
    import torch

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return launched_processes() > 1 and (forced_cpu or not torch.cuda.is_available())


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Process 0 runs the block first, the other processes after it finished (a no-op for one process)."""
    if launched_processes() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState(cpu=cpu_processes()).main_process_first():
        yield
