"""Every random number generator the loop touches: seeding, capture to tensors + JSON, restore.

Captured per process: Python `random`, NumPy's global RNG, torch's CPU RNG, each CUDA device's RNG
and the loop's own `torch.Generator` handed to the task. Stored as safetensors + JSON, never pickle.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def derived_seed(seed: int, rank: int, purpose: int) -> int:
    """A 63-bit seed for (run seed, process rank, purpose), decorrelated by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([seed, rank, purpose]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int, rank: int) -> torch.Generator:
    """Seed the global RNGs of this process and return the generator handed to the task."""
    global_seed = derived_seed(seed, rank, 0)
    random.seed(global_seed)
    np.random.seed(global_seed % 2**32)
    torch.manual_seed(global_seed)
    return torch.Generator().manual_seed(derived_seed(seed, rank, 1))


def capture_rng(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) describing every RNG state of this process."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch_cpu": torch.get_rng_state(),
        "task_generator": generator.get_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
    }
    if torch.cuda.is_initialized():  # never initialise CUDA just to read an RNG nobody used
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    meta = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], generator: torch.Generator) -> None:
    """Put every RNG of this process back to a captured state."""
    py = meta["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npm = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((npm["kind"], keys, npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["task_generator"])
    cuda = [tensors[f"cuda_{i}"] for i in range(sum(key.startswith("cuda_") for key in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


@contextlib.contextmanager
def isolated_rng(generator: torch.Generator) -> Iterator[None]:
    """Run a block (validation) without changing any RNG state the training sees afterwards."""
    tensors, meta = capture_rng(generator)
    tensors = {k: v.clone() for k, v in tensors.items()}
    try:
        yield
    finally:
        restore_rng(tensors, meta, generator)
