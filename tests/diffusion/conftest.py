"""Fixtures for these tests (CPU, fp32, seconds)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run on one intra-op thread, restored afterwards.

    Tiny tensors gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    barrier spinning against other processes made these tests 5-10x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
