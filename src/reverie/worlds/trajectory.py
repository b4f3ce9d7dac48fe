"""Smooth, human-like, collision-free 6-DoF camera trajectories (RELIC arXiv 2512.04040 §3).

RELIC trains on human-driven camera paths that stay collision-free and *deliberately revisit*
earlier viewpoints, so the model must remember what it has seen. ``sample_trajectory`` produces
such paths procedurally in three layers:

1. behaviours (:mod:`reverie.worlds.behaviours`) pick goals and plan :class:`Segment` s: walk a
   collision-free path (A* through doorways, :mod:`reverie.worlds.freespace`), pause, look around,
   turn away and back, travel away and return to a recorded viewpoint;
2. a segment runner turns the current segment into a command (pure pursuit along the path with
   a braking speed profile ``v <= sqrt(2 a d)``, gaze target);
3. a rate- and acceleration-limited controller (:mod:`reverie.worlds.controller`) integrates the
   pose at ``fps * substeps`` Hz and never lets the camera centre leave the free space.

Roll is small smooth noise. Frames follow ``docs/conventions.md``: world-to-camera ``R`` with
OpenCV camera axes, camera centres ``P`` in world metres, z up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reverie.camera.rotations import R_from_yaw_pitch_roll
from reverie.worlds.behaviours import FAMILIES, BehaviourContext, Segment
from reverie.worlds.controller import CameraState, Controller, SegmentRunner
from reverie.worlds.freespace import FreeSpace
from reverie.worlds.spec import SceneSpec

log = logging.getLogger(__name__)

Family = Literal["revisit", "random", "mixed"]
FAMILY_NAMES: tuple[str, ...] = ("revisit", "random", "mixed")


@dataclass(frozen=True)
class TrajectoryConfig:
    """Limits and behaviour parameters of sampled camera trajectories.

    Attributes (units in brackets; angles in degrees):
        max_speed: horizontal speed limit [m/s].
        cruise_speed: (min, max) walking speed drawn per move [m/s], <= max_speed.
        max_accel: limit on the norm of the 3D acceleration [m/s^2].
        max_vertical_speed: pedestal speed limit [m/s].
        max_yaw_rate, max_yaw_accel: heading rate [deg/s] and acceleration [deg/s^2] limits.
        max_pitch: |pitch| limit [deg]; pitch is the elevation of the optical axis.
        max_pitch_rate, max_pitch_accel: tilt rate [deg/s] and acceleration [deg/s^2] limits.
        max_roll: |roll| bound of the smooth roll noise [deg].
        roll_frequency: (min, max) frequency of the roll noise sinusoids [Hz].
        camera_radius: radius of the camera's collision sphere [m].
        grid_resolution: cell size of the planning grid [m].
        substeps: controller steps per video frame (the controller runs at fps * substeps Hz).
        brake_fraction: fraction of each acceleration limit that braking profiles plan with;
            0.5 leaves the rest for steering and keeps the closing phase within the limit.
        lookahead: pure-pursuit lookahead distance along the path [m].
        path_margin: clearance kept by shortcut path segments where possible [m].
        goal_clearance: clearance required of sampled goals [m].
        min_goal_distance: shortest straight-line distance to an exploration goal [m].
        far_distance: (min, max) preferred distance of a "travel away" goal from the
            viewpoint it returns to [m] (another room is preferred when there is one).
        pause_seconds: (min, max) duration of pauses [s].
        dwell_seconds: (min, max) time spent at a revisited viewpoint [s].
        look_away_deg: (min, max) pan of a "turn away" before turning back [deg].
        look_around_deg: (min, max) pan of an exploratory look-around [deg].
        return_position_noise: std of the offset of a return from the recorded position [m].
        return_angle_noise: std of the offset of a return's heading / pitch [deg].
        z_change_prob: chance that a segment picks a new camera height (pedestal).
    """

    max_speed: float = 1.2
    cruise_speed: tuple[float, float] = (0.7, 1.1)
    max_accel: float = 1.5
    max_vertical_speed: float = 0.3
    max_yaw_rate: float = 75.0
    max_yaw_accel: float = 150.0
    max_pitch: float = 30.0
    max_pitch_rate: float = 40.0
    max_pitch_accel: float = 80.0
    max_roll: float = 4.0
    roll_frequency: tuple[float, float] = (0.05, 0.25)
    camera_radius: float = 0.3
    grid_resolution: float = 0.05
    substeps: int = 4
    brake_fraction: float = 0.5
    lookahead: float = 0.6
    path_margin: float = 0.15
    goal_clearance: float = 0.3
    min_goal_distance: float = 1.5
    far_distance: tuple[float, float] = (3.0, 6.0)
    pause_seconds: tuple[float, float] = (0.6, 2.0)
    dwell_seconds: tuple[float, float] = (1.5, 3.0)
    look_away_deg: tuple[float, float] = (100.0, 200.0)
    look_around_deg: tuple[float, float] = (40.0, 100.0)
    return_position_noise: float = 0.1
    return_angle_noise: float = 4.0
    z_change_prob: float = 0.35

    def __post_init__(self) -> None:
        positive = {
            "max_speed": self.max_speed,
            "max_accel": self.max_accel,
            "max_vertical_speed": self.max_vertical_speed,
            "max_yaw_rate": self.max_yaw_rate,
            "max_yaw_accel": self.max_yaw_accel,
            "max_pitch_rate": self.max_pitch_rate,
            "max_pitch_accel": self.max_pitch_accel,
            "grid_resolution": self.grid_resolution,
            "lookahead": self.lookahead,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"TrajectoryConfig.{name} must be > 0, got {value}")
        if not 0 < self.cruise_speed[0] <= self.cruise_speed[1] <= self.max_speed:
            raise ValueError(
                f"need 0 < cruise_speed[0] <= cruise_speed[1] <= max_speed, got "
                f"{self.cruise_speed}, {self.max_speed}"
            )
        if not (0 < self.max_pitch < 90 and 0 <= self.max_roll < 90):
            raise ValueError("max_pitch must be in (0, 90) and max_roll in [0, 90) degrees")
        if not 0 < self.brake_fraction <= 1 or self.substeps < 1:
            raise ValueError("brake_fraction must be in (0, 1] and substeps >= 1")


@dataclass(frozen=True, eq=False)
class CameraTrajectory:
    """A sampled camera path (RELIC arXiv 2512.04040 §3).

    Shapes:
        R: (T, 3, 3) float64 world-to-camera rotations (OpenCV camera axes).
        P: (T, 3) float64 camera centres, world metres.
    Attributes:
        fps: frames per second.
        family: "revisit", "random" or "mixed".
        segments: the executed plan (for debugging): each :class:`Segment` with its start and
            end time in seconds.
        collision_stops: controller steps where the next position would not have been free
            and the camera slid or stopped instead (ideally 0; such steps may exceed the
            acceleration limit).
    """

    R: np.ndarray
    P: np.ndarray
    fps: int
    family: str
    segments: tuple[Segment, ...] = field(default=())
    collision_stops: int = 0

    def __len__(self) -> int:
        return len(self.P)

    @property
    def seconds(self) -> float:
        """Duration T / fps in seconds."""
        return len(self.P) / self.fps


def _roll_noise(rng: np.random.Generator, times: np.ndarray, cfg: TrajectoryConfig) -> np.ndarray:
    """Smooth roll (radians) as a sum of three sinusoids; |roll| <= max_roll by construction.

    Shapes: times (T,) seconds -> (T,) radians.
    """
    weights = rng.dirichlet(np.ones(3)) * rng.uniform(0.4, 1.0)  # (3,), sums to <= 1
    freq = rng.uniform(*cfg.roll_frequency, size=3)  # (3,) Hz
    phase = rng.uniform(0, 2 * np.pi, size=3)
    waves = np.sin(2 * np.pi * freq * times[:, None] + phase)  # (T, 3)
    return np.radians(cfg.max_roll) * waves @ weights


def _start_state(fs: FreeSpace, rng: np.random.Generator, cfg: TrajectoryConfig) -> CameraState:
    """Random free start position, random heading, small pitch, random height (seeded)."""
    for clearance in (cfg.goal_clearance, 0.1, 0.0):
        try:
            xy = fs.sample_free(rng, clearance)
            break
        except ValueError:
            continue
    else:
        raise ValueError(
            f"the scene has no free space for the camera (camera radius {cfg.camera_radius} m)"
        )
    z_lo, z_hi = fs.z_range
    z = rng.uniform(z_lo, z_hi) if z_hi - z_lo > 0.2 else 0.5 * (z_lo + z_hi)
    return CameraState(
        p=np.array([xy[0], xy[1], z]),
        v=np.zeros(3),
        yaw=float(rng.uniform(-np.pi, np.pi)),
        pitch=float(np.radians(rng.uniform(-8.0, 4.0))),
    )


def sample_trajectory(
    spec: SceneSpec,
    family: Family,
    *,
    seconds: float,
    fps: int = 16,
    seed: int,
    config: TrajectoryConfig = TrajectoryConfig(),
) -> CameraTrajectory:
    """Sample a smooth, collision-free, human-like camera trajectory in a scene.

    RELIC arXiv 2512.04040 §3: collision-constrained camera paths; the ``revisit`` family
    deliberately returns to earlier viewpoints (turn away >= 90 deg and back, or travel to
    another room / far area and return to a recorded position and orientation), ``random``
    explores (walks to random goals looking along the motion or at objects, pauses, occasional
    look-arounds, no deliberate returns) and ``mixed`` interleaves both at random.

    Guarantees: every frame's camera centre is free in ``FreeSpace.from_scene(spec,
    config.camera_radius, config.grid_resolution)`` (inside camera_bounds and the height
    range, outside every inflated object footprint); speeds and rates never exceed the config
    limits; accelerations stay within them except at ``collision_stops`` (normally none);
    |pitch| <= max_pitch, |roll| <= max_roll. Deterministic given (spec, family, seed).

    Args:
        spec: the scene.
        family: "revisit", "random" or "mixed".
        seconds: duration; the trajectory has ``T = max(1, round(seconds * fps))`` frames.
        fps: frames per second (default 16, docs/conventions.md).
        seed: random seed (>= 0).
        config: limits and behaviour parameters.

    Shapes: returns :class:`CameraTrajectory` with R (T, 3, 3) and P (T, 3), float64.
    Raises:
        ValueError: unknown family, non-positive seconds/fps, negative seed, or a scene with no
            free space for the camera.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown trajectory family {family!r}; expected one of {FAMILY_NAMES}")
    if not (seconds > 0 and fps > 0 and seed >= 0):
        raise ValueError(f"need seconds > 0, fps > 0, seed >= 0; got {seconds}, {fps}, {seed}")
    fs = FreeSpace.from_scene(spec, config.camera_radius, config.grid_resolution)
    rng = np.random.default_rng([seed, FAMILY_NAMES.index(family), spec.seed, 0x7A1])
    state = _start_state(fs, rng, config)
    ctx = BehaviourContext(fs=fs, spec=spec, cfg=config, rng=rng, state=state)
    plan = FAMILIES[family](ctx)
    dt = 1.0 / (fps * config.substeps)
    controller = Controller(fs, config, dt)

    n_frames = max(1, round(seconds * fps))
    P = np.empty((n_frames, 3))
    yaw, pitch = np.empty(n_frames), np.empty(n_frames)
    done: list[Segment] = []
    runner: SegmentRunner | None = None
    for frame in range(n_frames):
        P[frame], yaw[frame], pitch[frame] = state.p, state.yaw, state.pitch
        for _ in range(config.substeps):
            if runner is None or runner.done:  # every segment runs for at least one step
                if runner is not None:
                    done.append(runner.finished(state.t))
                runner = SegmentRunner(next(plan), state, config, fs)
            controller.step(state, runner.command(state))
    if runner is not None:
        done.append(runner.finished(state.t))
    if controller.collision_stops:
        log.debug("trajectory seed %d: %d collision stops", seed, controller.collision_stops)

    roll = _roll_noise(rng, np.arange(n_frames) / fps, config)  # (T,)
    R = R_from_yaw_pitch_roll(yaw, pitch, roll)  # (T, 3, 3)
    return CameraTrajectory(
        R=R,
        P=P,
        fps=fps,
        family=family,
        segments=tuple(done),
        collision_stops=controller.collision_stops,
    )
