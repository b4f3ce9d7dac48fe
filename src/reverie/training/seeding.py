"""Seeding and RNG snapshots (python, numpy, torch CPU/CUDA) for reproducible, resumable runs."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    Raises:
        ValueError: a negative seed.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global RNG is what gets seeded
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed (which
    the DataLoader derives from its generator), so every library is seeded in every worker."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what gets seeded


def rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG, loadable with ``torch.load(weights_only=True)``."""
    name, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what gets seeded
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`rng_state` snapshot (CUDA states only when CUDA is available)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002 - the legacy global RNG is what gets seeded
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mix_seed(*values: int) -> int:
    """A 63-bit seed derived from integers (e.g. ``(seed, sample_position)``), stable across
    processes and Python versions."""
    (out,) = np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)
    return int(out) >> 1
