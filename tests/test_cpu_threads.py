"""ldmkit.cpu_threads: wait policy before torch loads, the user's settings win, threads follow free cores."""

import os
import subprocess
import sys
import time

import pytest

import ldmkit.cpu_threads as cpu_threads
from ldmkit.cpu_threads import ThreadGovernor, prepare_openmp, requested_threads
from ldmkit.errors import UsageError

PROBE = ("import os, sys; from ldmkit.cpu_threads import prepare_openmp; prepare_openmp(sys.argv[1]); import torch; "
         "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")


def _probe(command: str, **env_overrides: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "LDMKIT_THREADS")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE, command], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("command, env, expected", [
    ("generate", {}, "PASSIVE None"),
    ("eval", {}, "PASSIVE None"),
    ("train", {}, "None None"),                          # training adapts its thread count instead
    ("generate", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None"),  # the user's choice wins
    ("generate", {"GOMP_SPINCOUNT": "123"}, "None 123"),
    ("generate", {"LDMKIT_THREADS": "off"}, "None None"),
])
def test_wait_policy_is_set_before_torch_loads(command, env, expected):
    assert _probe(command, **env) == expected


def test_too_late_once_torch_is_loaded():
    import torch  # noqa: F401  (this test process has it already)

    env: dict[str, str] = {}
    assert prepare_openmp("generate", env) is False and env == {}


def test_requested_threads():
    assert requested_threads(None, {}) is None
    assert requested_threads(3, {"LDMKIT_THREADS": "1"}) == 3  # the flag beats the environment
    assert requested_threads(None, {"LDMKIT_THREADS": "2"}) == 2
    assert requested_threads(None, {"LDMKIT_THREADS": "off"}) is None
    with pytest.raises(UsageError, match="--threads must be in 1..256"):
        requested_threads(0, {})
    with pytest.raises(UsageError, match="--threads must be in 1..256"):
        requested_threads(100_000, {})
    with pytest.raises(UsageError, match="LDMKIT_THREADS must be"):
        requested_threads(None, {"LDMKIT_THREADS": "99999999999"})
    with pytest.raises(UsageError, match="LDMKIT_THREADS must be"):
        requested_threads(None, {"LDMKIT_THREADS": "lots"})


def test_governor_follows_the_free_cores(monkeypatch):
    """Readings (wall s, busy CPU s of all processes, CPU s of ours) drive the thread count: fewer threads at
    once, more only after two readings agree."""
    readings = iter([
        (0.0, 0.0, 0.0),
        (1.0, 2.0, 1.0),    # 1 core busy elsewhere -> 1 thread at once
        (2.0, 4.0, 2.0),    # still busy -> 1
        (3.0, 5.0, 3.0),    # others left: 2 wanted, not yet (one reading)
        (4.0, 7.0, 5.0),    # second reading agrees -> 2
        (5.0, 9.0, 6.8),    # 0.2 cores elsewhere is noise -> stays 2
    ])
    monkeypatch.setattr(cpu_threads, "_cpu_sample", lambda: next(readings))
    monkeypatch.setattr(cpu_threads.time, "monotonic", lambda: 1e9)  # every poll is past the interval
    applied = []
    monkeypatch.setattr(cpu_threads, "apply_threads", applied.append)
    gov = ThreadGovernor(max_threads=2)
    gov.cores = 2
    assert [gov.poll() for _ in range(5)] == [1, 1, 1, 2, 2]
    assert applied == [1, 2]
    gov.restore()
    assert applied == [1, 2]  # already at its starting count


def test_governor_reads_real_load():
    """With every core kept busy by other processes, the governor drops to one thread (real /proc readings)."""
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux /proc")
    import torch

    before = torch.get_num_threads()
    gov = ThreadGovernor(max_threads=max(2, before), interval=0.3)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(min(gov.cores, 8))]
    try:
        deadline = time.monotonic() + 10
        while gov.poll() != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gov.current == 1
    finally:
        for p in busy:
            p.kill()
            p.wait()
        gov.restore()
        torch.set_num_threads(before)


def test_train_threads_option_fixes_torch_threads(tmp_path, monkeypatch):
    import torch

    from ldmkit.cli import main

    monkeypatch.setattr(cpu_threads, "_user_fixed", False)
    before = torch.get_num_threads()
    try:
        code = main(["train", "unet", "--config", "configs/tiny.yaml", "--out", str(tmp_path / "run"),
                     "--set", "train.steps=1", "--threads", "1"])
        assert code == 0 and torch.get_num_threads() == 1
        assert not cpu_threads.adaptive_allowed()  # the user's count is never adapted
    finally:
        torch.set_num_threads(before)
