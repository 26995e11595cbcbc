"""ldmkit.cpu_threads: the OpenMP wait policy is set before torch loads, the user's environment wins."""

import os
import subprocess
import sys

import pytest

from ldmkit.cpu_threads import DEFAULT_SPINCOUNT, prepare_openmp, requested_threads
from ldmkit.errors import UsageError

PROBE = "import os, sys, ldmkit, torch; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _probe(**env_overrides: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "LDMKIT_THREADS")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_sets_spincount_before_torch_loads():
    assert _probe() == f"{DEFAULT_SPINCOUNT} None"


@pytest.mark.parametrize("env, expected", [
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "None ACTIVE"),
    ({"GOMP_SPINCOUNT": "123"}, "123 None"),
    ({"LDMKIT_THREADS": "off"}, "None None"),
])
def test_users_environment_wins(env, expected):
    assert _probe(**env) == expected


def test_too_late_once_torch_is_loaded():
    env: dict[str, str] = {}
    import torch  # noqa: F401  (loaded by this test process already)

    assert prepare_openmp(env) is False and env == {}


def test_requested_threads():
    assert requested_threads(None, {}) is None
    assert requested_threads(3, {"LDMKIT_THREADS": "1"}) == 3  # the flag beats the environment
    assert requested_threads(None, {"LDMKIT_THREADS": "2"}) == 2
    assert requested_threads(None, {"LDMKIT_THREADS": "off"}) is None
    with pytest.raises(UsageError, match="--threads must be >= 1"):
        requested_threads(0, {})
    with pytest.raises(UsageError, match="LDMKIT_THREADS must be"):
        requested_threads(None, {"LDMKIT_THREADS": "lots"})


def test_train_threads_option_sets_torch_threads(tmp_path):
    import torch

    from ldmkit.cli import main

    before = torch.get_num_threads()
    try:
        code = main(["train", "unet", "--config", "configs/tiny.yaml", "--out", str(tmp_path / "run"),
                     "--set", "train.steps=1", "--threads", "1"])
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
