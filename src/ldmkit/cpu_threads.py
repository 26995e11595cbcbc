"""CPU threading defaults shared by every entry point: fast alone, and fair when the machine is shared.

torch's CPU kernels run on libgomp (GNU OpenMP). By default its idle threads spin for a while at the end of
every parallel region before they sleep. Alone on a machine that costs nothing; beside another busy process
it is ruinous: a spinning thread holds a core that the other process (or ldmkit's own descheduled thread,
which the barrier is waiting for) needs. `ldmkit train` on the tiny recipe went from 0.1 s to 8 s a step
beside other CPU work. libgomp reads its wait policy once, when torch loads it, so `prepare_openmp()` must
run before `import torch`: the CLI calls it first thing, and `import ldmkit` (hence `ldmkit.training.train`)
calls it too.

The user's environment always wins: if OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, it is left alone, and
LDMKIT_THREADS=off leaves OpenMP and torch's thread count exactly as torch sets them. The figures behind
the defaults: benchmarks/contention.py, docs/benchmarks.md ("Shared machines").
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

SWITCH = "LDMKIT_THREADS"
"""Environment variable: `off` = no ldmkit defaults at all; an integer N = N intra-op threads."""

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""A user who sets either of these has chosen a wait policy: ldmkit sets neither."""

DEFAULT_SPINCOUNT = "10000"
"""libgomp spins this many iterations (a few microseconds) before an idle thread sleeps (its own default
is 300,000; OMP_WAIT_POLICY=PASSIVE is 0). Short enough to hand a shared core back at once, long enough
that back-to-back small kernels do not pay a futex wake-up each (measured: docs/benchmarks.md)."""


def disabled(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when the user asked ldmkit to leave threading alone (LDMKIT_THREADS=off)."""
    env = os.environ if environ is None else environ
    return env.get(SWITCH, "").strip().lower() == "off"


def prepare_openmp(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ldmkit's OpenMP wait policy unless the user set one or torch is already loaded; True if set."""
    env = os.environ if environ is None else environ
    if disabled(env) or "torch" in sys.modules or any(name in env for name in WAIT_VARIABLES):
        return False
    env["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT
    return True


def requested_threads(cli_value: int | None, environ: MutableMapping[str, str] | None = None) -> int | None:
    """Intra-op threads to use: `--threads` first, then LDMKIT_THREADS=N; None = torch's own choice."""
    from ldmkit.errors import UsageError

    if cli_value is not None:
        if cli_value < 1:
            raise UsageError(f"--threads must be >= 1, got {cli_value}")
        return cli_value
    env = os.environ if environ is None else environ
    value = env.get(SWITCH, "").strip()
    if not value or value.lower() == "off":
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{SWITCH} must be 'off' or a whole number >= 1, got {value[:40]!r}")
    return int(value)


def apply_threads(n: int | None) -> None:
    """Set torch's intra-op thread count (None: leave it)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(n)
