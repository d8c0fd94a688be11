"""Helpers shared by tests in different folders (the tests/ root is on sys.path through conftest.py)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny convolutions: one thread avoids oversubscription on a busy machine (the result does not depend on it)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
