"""An episode in memory: frames, camera poses, actions, caption and scene description.

What a world records (procedural scenes through ``reverie.data.render_job``, the Memory Maze
world in :mod:`reverie.worlds.memory_maze`); ``reverie.data.episode`` writes and reads it on
disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reverie.camera import NUM_ACTIONS


@dataclass
class Episode:
    """An episode in memory.

    Shapes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        R: ``(T, 3, 3)`` float64 world-to-camera; P: ``(T, 3)`` float64 metres.
        actions: ``(T, 13)`` float32, normalised by ``action_scale`` (metres per frame).
        K: ``(3, 3)`` float64 intrinsics in pixels.
        depth: optional ``(T, H, W)`` float32 metres.
    """

    frames: np.ndarray
    R: np.ndarray
    P: np.ndarray
    actions: np.ndarray
    action_scale: float
    K: np.ndarray
    fps: float
    caption: str
    scene: dict[str, Any]
    trajectory: str = "unknown"
    stats: dict[str, Any] = field(default_factory=dict)
    depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        T = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (T, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        if self.R.shape != (T, 3, 3) or self.P.shape != (T, 3):
            raise ValueError(
                f"poses must be R ({T}, 3, 3) and P ({T}, 3) to match {T} frames, "
                f"got {self.R.shape} and {self.P.shape}"
            )
        if self.actions.shape != (T, NUM_ACTIONS):
            raise ValueError(f"actions must be ({T}, {NUM_ACTIONS}), got {self.actions.shape}")
        if self.depth is not None and self.depth.shape != self.frames.shape[:3]:
            raise ValueError(f"depth must be {self.frames.shape[:3]}, got {self.depth.shape}")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.frames.shape[1], self.frames.shape[2]
