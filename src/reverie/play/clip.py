"""The last N seconds of a play session: frames and the action log, for "Save clip"."""

from __future__ import annotations

import collections
import tempfile
import threading
from pathlib import Path

import numpy as np

from reverie.camera.actions import ACTION_NAMES
from reverie.data.video import VIEWER_PIXEL_FORMAT, write_mp4


class ClipBuffer:
    """Ring buffer of the most recent ``seconds * fps`` generated frames and their actions.

    Thread-safe: the generation thread adds, HTTP handlers read. Frame indices count every frame
    of the stream (frame 0 is the start frame), so the log says where the clip starts.

    Args:
        seconds: clip length kept, seconds (> 0).
        fps: frame rate of the stream.
        info: metadata copied into the action log (prompt, memory policy, source, ...).
    """

    def __init__(self, seconds: float, fps: int, info: dict | None = None) -> None:
        if not seconds > 0:
            raise ValueError(f"clip seconds must be > 0, got {seconds}")
        self.fps = fps
        self.info = dict(info or {})
        self._frames: collections.deque = collections.deque(maxlen=max(1, round(seconds * fps)))
        self._lock = threading.Lock()
        self._count = 0

    def add(self, frame: np.ndarray, action: np.ndarray, keys: frozenset[str], gamma: float) -> int:
        """Append one frame ``(H, W, 3)`` uint8 with its action ``(13,)``; returns its index."""
        entry = {
            "frame": self._count,
            "time_s": round(self._count / self.fps, 4),
            "keys": sorted(keys),
            "gamma": gamma,
            "action": [round(float(v), 4) for v in action],
        }
        with self._lock:
            self._frames.append((frame, entry))
            self._count += 1
            return self._count - 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def snapshot(self) -> tuple[np.ndarray, dict]:
        """Frames ``(T, H, W, 3)`` uint8 and the action log (JSON-ready dict).

        Raises:
            ValueError: nothing generated yet.
        """
        with self._lock:
            items = list(self._frames)
        if not items:
            raise ValueError("no frames yet: start a stream first")
        log = {
            **self.info,
            "fps": self.fps,
            "action_names": list(ACTION_NAMES),
            "first_frame": items[0][1]["frame"],
            "frames": [entry for _, entry in items],
        }
        return np.stack([frame for frame, _ in items]), log

    def mp4_bytes(self) -> bytes:
        """The buffered frames as a browser-playable H.264 mp4 (yuv420p). Raises ValueError."""
        frames, _ = self.snapshot()
        with tempfile.TemporaryDirectory(prefix="reverie-clip-") as tmp:
            path = Path(tmp) / "clip.mp4"
            write_mp4(path, frames, self.fps, pixel_format=VIEWER_PIXEL_FORMAT, crf=18)
            return path.read_bytes()
