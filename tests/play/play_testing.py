"""A fake world model with the `reverie.engine.WorldModel` interface, for the play tests.

Frames are the start image rolled by the integrated camera motion, so static actions give
identical frames and held keys visibly move the picture, in microseconds per step.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from fastapi.testclient import TestClient

from reverie.camera.actions import ACTION_INDEX


@dataclass(frozen=True)
class FakeProposal:
    """The fields of `reverie.engine.session.Proposal` the play worker reads."""

    actions: np.ndarray  # (frames_per_step, 13)
    denoise_s: float
    start: int
    gamma: float


class FakeSession:
    def __init__(self, model: FakeModel, image: np.ndarray, memory: str, gamma: float) -> None:
        self.model, self.memory, self.gamma = model, memory, gamma
        self.first_frame = np.asarray(image, dtype=np.uint8)
        self.offset = np.zeros(2, dtype=np.float64)  # (dy, dx) pixels
        self.frames = 1
        self.closed = False
        self.gammas: list[float] = []
        self.proposals = 0

    def propose(self, action: np.ndarray) -> FakeProposal:
        """Like `Session.propose`: nothing changes until `commit` (most of the step time)."""
        assert action.shape == (13,) and action.dtype == np.float32
        time.sleep(0.8 * self.model.step_s)
        self.proposals += 1
        actions = np.tile(action, (self.model.frames_per_step, 1))
        return FakeProposal(actions, 0.8 * self.model.step_s, self.frames, self.gamma)

    def commit(self, proposal: FakeProposal) -> np.ndarray:
        if proposal.start != self.frames:
            raise ValueError("stale proposal")
        time.sleep(0.2 * self.model.step_s)
        return self._move(proposal.actions[0], proposal.gamma)

    def step(self, action: np.ndarray) -> np.ndarray:
        assert action.shape == (13,) and action.dtype == np.float32
        time.sleep(self.model.step_s)
        return self._move(action, self.gamma)

    def _move(self, action: np.ndarray, g: float) -> np.ndarray:
        a = {name: float(action[i]) for name, i in ACTION_INDEX.items()}
        dy = g * (a["pedestal_up"] - a["pedestal_down"]) + a["tilt_up"] - a["tilt_down"]
        dx = g * (a["truck_left"] - a["truck_right"] + a["dolly_in"] - a["dolly_out"])
        velocity = np.array([dy, dx + a["pan_left"] - a["pan_right"]])  # pixels per frame
        self.gammas.append(g)
        out = []
        for _ in range(self.model.frames_per_step):
            self.offset += velocity
            dy, dx = np.round(self.offset).astype(int)
            out.append(np.roll(self.first_frame, (dy, dx), axis=(0, 1)))
        self.frames += len(out)
        return np.stack(out)  # (4, res, res, 3)

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "cache_tokens": 16 * self.frames,
            "cache_bytes": 1024 * self.frames,
            "memory_policy": self.memory,
            "step_latency_s": self.model.step_s,
        }

    def close(self) -> None:
        self.closed = True
        with self.model.lock:
            self.model.closed += 1


class FakeModel:
    resolution = 32
    fps = 16
    frames_per_step = 4
    memory_policies = ("relic", "full", "window")

    def __init__(self, step_s: float = 0.0, fail_start: bool = False) -> None:
        self.step_s = step_s
        self.fail_start = fail_start
        self.lock = threading.Lock()
        self.started: list[FakeSession] = []
        self.closed = 0

    def start(self, image, prompt="", *, memory="relic", gamma=1.0, seed=0) -> FakeSession:
        if self.fail_start:
            raise ValueError("fake start failure")
        if memory not in self.memory_policies:
            raise ValueError(f"unknown memory policy {memory!r}")
        image = np.asarray(image)
        assert image.shape == (self.resolution, self.resolution, 3), image.shape
        session = FakeSession(self, image, memory, gamma)
        with self.lock:
            self.started.append(session)
        return session


def pattern(resolution: int = 32) -> np.ndarray:
    """A colourful asymmetric test picture `(res, res, 3)` uint8."""
    y, x = np.mgrid[0:resolution, 0:resolution]
    img = np.stack([x * 255 // resolution, y * 255 // resolution, (x * y) % 256], -1)
    img[: resolution // 4, : resolution // 3] = (255, 255, 0)
    return img.astype(np.uint8)


def fake_render_scene(seed: int, resolution: int):
    """Stand-in for `reverie.play.images.render_scene` (no MuJoCo)."""
    from reverie.play.images import StartImage

    img = np.roll(pattern(resolution), seed, axis=1)
    return StartImage(img, f"fake scene {seed}", {"kind": "scene", "scene_seed": seed})


class LocalClient(TestClient):
    """A TestClient that sends ``Host: 127.0.0.1:8000`` (the server refuses other names) on
    HTTP requests and WebSockets alike (TestClient's own WebSockets say "testserver")."""

    def __init__(self, app, base_url: str = "http://127.0.0.1:8000", **kwargs) -> None:
        super().__init__(app, base_url=base_url, **kwargs)

    def websocket_connect(self, url: str, *args, **kwargs):
        ws_url = str(self.base_url.join(url)).replace("http://", "ws://", 1)
        return super().websocket_connect(ws_url, *args, **kwargs)
