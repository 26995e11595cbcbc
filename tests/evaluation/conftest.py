"""Fixtures of the evaluation tests."""

import contextlib

import pytest
import torch


@contextlib.contextmanager
def _torch_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models run faster without thread start-up), restored after."""
    with _torch_on_one_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """torch on one thread for a test module and its module-scoped fixtures, restored after."""
    with _torch_on_one_thread():
        yield
