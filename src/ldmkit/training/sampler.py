"""The order in which training samples are drawn: a seeded permutation per epoch, read as a stream.

Each micro-step takes the next `batch_size * world_size` ids of the stream (crossing into the next
epoch's permutation when one runs out) and process `rank` keeps its contiguous `batch_size` slice.
The whole state is (epoch, index), so resuming needs two integers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataPosition:
    """Where the stream of sample ids stands."""

    epoch: int
    """Epoch whose permutation is being read (0-based)."""
    index: int
    """Ids of that epoch's permutation already consumed, by all processes together."""

    def __post_init__(self) -> None:
        if self.epoch < 0 or self.index < 0:
            raise ValueError(f"DataPosition must be non-negative, got {self}")


class DataOrder:
    """Seeded per-epoch permutations of range(num_samples), sharded across processes."""

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        position: DataPosition = DataPosition(0, 0),
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"a training task needs at least 1 sample, got num_samples={num_samples}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.rank, self.world_size = rank, world_size
        if position.index > num_samples:
            raise ValueError(f"{position} is past the end of an epoch of {num_samples} samples")
        self.position = position
        self._cached: tuple[int, list[int]] | None = None

    def permutation(self, epoch: int) -> list[int]:
        """The ids of `epoch` in their training order (a pure function of seed and epoch)."""
        if self._cached is None or self._cached[0] != epoch:
            import numpy as np

            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            self._cached = (epoch, order.tolist())
        return self._cached[1]

    def next_batch(self) -> list[int]:
        """This process's ids for the next micro-step; advances the position for every process."""
        needed = self.batch_size * self.world_size
        taken: list[int] = []
        epoch, index = self.position.epoch, self.position.index
        while len(taken) < needed:
            if index == self.num_samples:
                epoch, index = epoch + 1, 0
            chunk = self.permutation(epoch)[index : index + needed - len(taken)]
            taken += chunk
            index += len(chunk)
        self.position = DataPosition(epoch, index)
        start = self.rank * self.batch_size
        return taken[start : start + self.batch_size]
