"""Fixtures of the evaluation tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models run faster without thread start-up), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
