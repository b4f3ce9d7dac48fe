"""Helpers of the evaluation tests: tiny synthetic episodes and an oracle world model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from reverie.camera import R_from_yaw_pitch_roll, actions_to_poses, poses_to_actions
from reverie.evaluation.heldout import GroundTruthEpisode
from reverie.evaluation.revisit_episode import RevisitEpisode

FPS = 16
STEP = 4


def turn_away_and_back(T: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """A path that walks forward while turning 180 deg away, then comes back the same way.

    Shapes: R (T, 3, 3), P (T, 3); frame t and frame T-1-t share a pose.
    """
    half = (T - 1) / 2
    s = 1.0 - np.abs(np.arange(T) - half) / half  # 0 -> 1 -> 0
    yaw = np.pi * s
    R = R_from_yaw_pitch_roll(yaw, np.zeros(T), np.zeros(T))
    P = np.stack([0.5 * s, np.zeros(T), np.full(T, 1.0)], axis=1)
    return R, P


def make_tiny_episode() -> RevisitEpisode:
    """17 frames: memorize 0..4, generate 5..16; frames 13..16 revisit 3..0."""
    R, P = turn_away_and_back(17)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(17, 64, 64, 3), dtype=np.uint8)
    frames[9:] = frames[:8][::-1]  # the return shows what the way out showed
    actions, scale = poses_to_actions(R, P)
    gt = GroundTruthEpisode(
        index=0,
        scene_seed=1_000_000,
        trajectory_seed=2_000_000,
        scene_kind="synthetic",
        caption="a test scene",
        frames=frames,
        R=R,
        P=P,
        actions=actions,
        action_scale=scale,
        fps=FPS,
    )
    rev = np.arange(13, 17)
    return RevisitEpisode(
        gt=gt,
        first_visit=0,
        leave=4,
        first_revisit=13,
        memorize_end=4,
        end=17,
        revisit_frames=rev,
        history_match=16 - rev,
        since_first_visit_s=(rev - (16 - rev)) / FPS,
    )


class OracleSession:
    """Returns the ground truth frames in order; integrates poses as the engine does."""

    def __init__(self, model: OracleModel, gamma: float) -> None:
        self.model, self.gamma = model, gamma
        self.first_frame = model.frames[0]
        self._t = 1
        self._actions = [np.eye(13, dtype=np.float32)[12]]

    def observe(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        assert len(frames) % STEP == 0
        np.testing.assert_array_equal(frames, self.model.frames[self._t : self._t + len(frames)])
        self._t += len(frames)
        self._actions.extend(actions)
        return frames

    def step(self, actions: np.ndarray) -> np.ndarray:
        out = self.model.frames[self._t : self._t + STEP]
        self._t += STEP
        self._actions.extend(actions)
        return out

    @property
    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        return actions_to_poses(
            np.stack(self._actions), self.gamma * self.model.config.metres_per_unit
        )

    def stats(self) -> dict:
        n = self._t
        return {
            "frames": n,
            "latent_frames": 1 + (n - 1) // STEP,
            "cache_tokens": 16 * (1 + (n - 1) // STEP),
            "cache_bytes": 1024 * n,
            "cache_frames": 1 + (n - 1) // STEP,
        }

    def close(self) -> None:
        pass


class OracleModel:
    """A stand-in for `WorldModel` that 'generates' the ground truth it was given."""

    resolution, fps, frames_per_step = 64, FPS, STEP
    memory_policies = ("full", "window", "relic", "mag", "retrieval")
    source, device = "oracle", "cpu"

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.config = SimpleNamespace(metres_per_unit=0.05)

    def start(
        self, image, prompt="", *, memory="relic", gamma=1.0, seed=0, kv_dtype="auto"
    ) -> OracleSession:
        np.testing.assert_array_equal(image, self.frames[0])
        return OracleSession(self, gamma)
