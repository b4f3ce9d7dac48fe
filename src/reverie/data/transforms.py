"""Clip transforms. Palindrome augmentation: RELIC arXiv 2512.04040 §3.4.

Given a clip of ``T`` frames, pick a pivot ``p`` in the second half and train on frames
``0 .. p-1`` followed by their time reversal ``p-2, p-3, ...`` until the clip again has ``T``
frames. Every augmented clip thus returns to viewpoints it has already seen, which teaches the
model to use its long-horizon memory.
"""

from __future__ import annotations

import math

import numpy as np


def sample_pivot(num_frames: int, rng: np.random.Generator) -> int:
    """Pivot ``p ~ U{ceil((T+1)/2), ..., T}`` (RELIC: ``t* ~ U(T/2, T)``).

    ``p`` is the number of forward frames; ``p = T`` leaves the clip unchanged.

    Raises:
        ValueError: ``num_frames < 1``.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    return int(rng.integers(math.ceil((num_frames + 1) / 2), num_frames + 1))


def palindrome_indices(num_frames: int, pivot: int) -> np.ndarray:
    """Frame order of a palindrome clip: ``[0, 1, ..., p-1, p-2, ..., 2p-1-T]``.

    The pivot frame ``p-1`` appears once (the camera turns around there, no duplicate frame).

    Shapes:
        returns ``(T,)`` int64 indices into the original clip.

    Raises:
        ValueError: ``pivot`` outside ``[ceil((T+1)/2), T]``.
    """
    lo = math.ceil((num_frames + 1) / 2)
    if not lo <= pivot <= num_frames:
        raise ValueError(
            f"pivot must be in [{lo}, {num_frames}] for {num_frames} frames, got {pivot}"
        )
    forward = np.arange(pivot)
    backward = np.arange(pivot - 2, 2 * pivot - 2 - num_frames, -1)
    return np.concatenate([forward, backward]).astype(np.int64)
