"""CPU threading defaults shared by every entry point: fast alone, and fair when the machine is shared.

torch's CPU kernels run on libgomp (GNU OpenMP), one intra-op thread per core by default. Beside another busy
process that is ruinous: every parallel region ends in a barrier that waits for the thread sharing its core
with the other process (and libgomp's idle threads spin while they wait). Two remedies, chosen by measurement
(benchmarks/contention.py, docs/benchmarks.md "Shared machines"):

- training adapts its thread count to the cores other processes leave free (`ThreadGovernor`, polled once
  per step), unless the run asks for determinism (results differ in the last bits with the thread count);
- generation (`generate`, `eval`, `serve`) keeps its thread count, so a seed gives the same PNG bytes however
  busy the machine is, and lets idle threads sleep at once (OMP_WAIT_POLICY=PASSIVE). libgomp reads that
  once, when torch loads, so the CLI sets it before any command imports torch.

The user's choice always wins: OMP_WAIT_POLICY / GOMP_SPINCOUNT are never overwritten, `--threads N`,
LDMKIT_THREADS=N or OMP_NUM_THREADS fix the thread count, and LDMKIT_THREADS=off turns all of this off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping

SWITCH = "LDMKIT_THREADS"
"""Environment variable: `off` = no ldmkit defaults at all; an integer N = N intra-op threads."""

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""A user who sets either of these has chosen a wait policy: ldmkit sets neither."""

MAX_THREADS = 256
"""The most intra-op threads a user may ask for (each one is an OS thread with its own stack)."""
PASSIVE_COMMANDS = ("generate", "eval", "serve")
"""CLI commands whose idle OpenMP threads sleep at once (their thread count stays fixed, see above)."""


def disabled(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when the user asked ldmkit to leave threading alone (LDMKIT_THREADS=off)."""
    env = os.environ if environ is None else environ
    return env.get(SWITCH, "").strip().lower() == "off"


def prepare_openmp(command: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Before torch loads: passive OpenMP waits for the PASSIVE_COMMANDS, unless the user chose a wait
    policy or turned ldmkit's defaults off. True if it set one."""
    env = os.environ if environ is None else environ
    if (command not in PASSIVE_COMMANDS or disabled(env) or "torch" in sys.modules
            or any(name in env for name in WAIT_VARIABLES)):
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def requested_threads(cli_value: int | None, environ: MutableMapping[str, str] | None = None) -> int | None:
    """Intra-op threads to use: `--threads` first, then LDMKIT_THREADS=N; None = torch's own choice."""
    from ldmkit.errors import UsageError

    if cli_value is not None:
        if not 1 <= cli_value <= MAX_THREADS:
            raise UsageError(f"--threads must be in 1..{MAX_THREADS}, got {cli_value}")
        return cli_value
    env = os.environ if environ is None else environ
    value = env.get(SWITCH, "").strip()
    if not value or value.lower() == "off":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_THREADS:
        raise UsageError(f"{SWITCH} must be 'off' or a whole number in 1..{MAX_THREADS}, got {value[:40]!r}")
    return int(value)


def apply_threads(n: int | None) -> None:
    """Set torch's intra-op thread count (None: leave it)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(n)


_user_fixed = False
"""True once the user fixed the thread count (--threads, LDMKIT_THREADS=N): nothing adapts it then."""


def fix_threads(n: int | None) -> None:
    """Apply a user's thread count (None: none given) and remember that it is theirs."""
    global _user_fixed
    if n is not None:
        _user_fixed = True
        apply_threads(n)


def adaptive_allowed(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether ldmkit may change the thread count while it runs: not when the user fixed it (--threads,
    LDMKIT_THREADS, OMP_NUM_THREADS) or turned ldmkit's defaults off, and only where /proc tells the load."""
    env = os.environ if environ is None else environ
    return (not _user_fixed and not disabled(env) and not env.get(SWITCH, "").strip()
            and "OMP_NUM_THREADS" not in env and os.path.exists("/proc/stat"))


def _cpu_sample() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds all processes were busy, CPU seconds this process used), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()  # fields after the command name; utime, stime = 12th, 13th
    return time.monotonic(), busy / ticks, (int(own[11]) + int(own[12])) / ticks


class ThreadGovernor:
    """Keeps torch's intra-op thread count at the number of cores other processes leave free.

    Measured (benchmarks/contention.py, docs/benchmarks.md): beside one busy process on a 2-core machine, two
    OpenMP threads ran a training step at 0.46x of its fair share (a barrier waits for the thread that shares
    its core), one thread at 1.5x; alone, two threads are 1.3x faster than one. `poll()` is called from the
    thread that runs the torch ops (OpenMP's thread count belongs to the calling thread), e.g. once per
    training step; at most every `interval` seconds it reads /proc and sets cores - busy cores of others
    (at least 1, at most the count it started with). Fewer threads take effect at once; more only after two
    readings agree, so a short burst elsewhere does not make it flap. Results differ in the last bits with
    the thread count, so runs that ask for determinism do not use it.
    """

    def __init__(self, max_threads: int, interval: float = 1.0):
        self.max_threads, self.interval = max_threads, interval
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.current, self._pending = max_threads, max_threads
        self._last = _cpu_sample()
        self.changes = 0

    def poll(self) -> int:
        """Re-read the load if `interval` has passed and adapt; returns the thread count in use."""
        if time.monotonic() - self._last[0] < self.interval:
            return self.current
        now = _cpu_sample()
        wall = now[0] - self._last[0]
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall  # cores busy elsewhere
        self._last = now
        target = max(1, min(self.max_threads, self.cores - round(others)))
        if target < self.current or (target > self.current and target == self._pending):
            apply_threads(target)
            self.current, self.changes = target, self.changes + 1
        self._pending = target
        return self.current

    def restore(self) -> None:
        """Back to the thread count it started with."""
        if self.current != self.max_threads:
            apply_threads(self.max_threads)
            self.current = self.max_threads


def training_governor(deterministic: bool, device_type: str) -> ThreadGovernor | None:
    """The governor for a training run on the CPU, or None when the thread count must stay as it is."""
    if deterministic or device_type != "cpu" or not adaptive_allowed():
        return None
    import torch

    return ThreadGovernor(torch.get_num_threads())
