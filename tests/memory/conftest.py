"""Fixtures for the memory tests (CPU, fp32, seconds)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
