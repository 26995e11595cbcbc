"""The order in which training samples are drawn: a seeded permutation per epoch, read as a stream.

Each micro-step takes the next `batch_size * world_size` ids of the stream (crossing into the next
epoch's permutation when one runs out) and process `rank` keeps its contiguous `batch_size` slice.
The whole state is (epoch, index), so resuming needs two integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_REPEAT = 100
"""Upper bound of a repeat rule's `times`."""
MAX_REPEAT_RULES = 64
"""Upper bound of the number of repeat rules."""


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


def check_repeats(repeats, where: str = "unet.repeats") -> tuple[dict, ...]:
    """`repeats` as a tuple of {"where": {column: value}, "times": k} (1 <= k <= MAX_REPEAT); UsageError naming the
    bad entry."""
    from ldmkit.data.splits import check_holdout
    from ldmkit.errors import UsageError

    if isinstance(repeats, (str, dict)) or not isinstance(repeats, (list, tuple)) or len(repeats) > MAX_REPEAT_RULES:
        raise UsageError(f"{where} must be a list of at most {MAX_REPEAT_RULES} rules such as "
                         f"[{{where: {{source: emoji}}, times: 3}}], got {repeats!r}")
    out = []
    for i, rule in enumerate(repeats):
        if not isinstance(rule, dict) or set(rule) != {"where", "times"}:
            raise UsageError(f"{where}[{i}] must have exactly the keys where and times, got {rule!r}")
        (combo,) = check_holdout([rule["where"]], f"{where}[{i}].where")
        times = rule["times"]
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_REPEAT:
            raise UsageError(f"{where}[{i}].times must be a whole number in 1..{MAX_REPEAT}, got {times!r}")
        out.append({"where": combo, "times": times})
    return tuple(out)


def repeated_rows(labels: Sequence[Mapping[str, str]], repeats: Sequence[dict],
                  where: str = "unet.repeats") -> list[int]:
    """The rows an epoch runs over: row i once per `times` of the first rule whose `where` its labels match (once
    when none does). A rule that matches no row, or only rows an earlier rule took, has no effect: UsageError."""
    from ldmkit.errors import UsageError

    taken = [0] * len(repeats)
    out: list[int] = []
    for row, row_labels in enumerate(labels):
        rule = next((k for k, r in enumerate(repeats)
                     if all(row_labels.get(c) == v for c, v in r["where"].items())), None)
        if rule is not None:
            taken[rule] += 1
        out += [row] * (repeats[rule]["times"] if rule is not None else 1)
    for k, count in enumerate(taken):
        if not count:
            raise UsageError(f"{where}[{k}] (where {repeats[k]['where']}) matches no training image that an earlier "
                             "rule did not take: it has no effect")
    return out
