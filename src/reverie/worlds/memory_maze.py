"""Memory Maze episodes (Pasukonis et al., arXiv 2210.13383) recorded as Reverie episodes.

One episode of ``MemoryMaze-9x9-ExtraObs-v0`` (``pip install 'reverie[memorymaze]'``: memory-maze
1.0.3, gym 0.26.2, dm-control 1.0.50, mujoco 3.17.0) driven by a scripted exploring policy, with
6-DoF camera poses in the conventions of ``docs/conventions.md``.

Pose conversion (constants read from memory_maze 1.0.3 ``tasks._memory_maze`` and dm_control's
``jumping_ball_with_head.xml``):

- World frame = the maze's MuJoCo frame: right-handed, z up, metres, origin at the maze centre,
  floor at ``z = 0``. The env's ``agent_pos`` is in grid cells with ``(0, 0)`` the bottom-left
  corner and the same axis directions (no flip), so the head's position is
  ``(agent_pos - MAZE_SIZE / 2) * GRID_SCALE_M`` with ``GRID_SCALE_M = 2`` metres per cell.
- ``agent_dir`` is the unit heading of the head in the x-y plane (yaw = ``atan2(dir_y, dir_x)``).
- The egocentric camera sits ``CAMERA_FORWARD_M = 0.15`` m ahead of the head's vertical axis at
  ``CAMERA_HEIGHT_M = 0.9`` m (head body 0.6 m + ``camera_height`` 0.3 m) and looks
  ``atan(0.1) = 5.71`` degrees below the horizon (``zaxis="0 -0.995 0.0995"``), with no roll. So
  ``P = (head_xy + 0.15 dir, 0.9)`` and ``R = R_from_yaw_pitch_roll(yaw, CAMERA_PITCH_RAD, 0)``.
  Every frame is checked against the camera pose MuJoCo reports (``pose_check_*`` in ``stats``).
- ``K`` uses the camera's vertical field of view read from the physics (80 degrees).

Time: the env's discrete actions act at its control rate (4 Hz by default: 0.25 s of simulated
time per step); one env step is one output frame, so ``fps = 16`` plays 4x faster than real time.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from reverie.camera import R_from_yaw_pitch_roll, poses_to_actions
from reverie.worlds.episode import Episode
from reverie.worlds.render import intrinsics

log = logging.getLogger(__name__)

ENV_ID = "MemoryMaze-9x9-ExtraObs-v0"
INSTALL_HINT = "pip install 'reverie[memorymaze]'"
RESOLUTIONS = (64, 128, 256)  # square; passed to memory_maze as camera_resolution
MAZE_SIZE = 9  # cells, without the outer walls
GRID_SCALE_M = 2.0  # metres per grid cell (xy_scale in memory_maze.tasks._memory_maze)
CAMERA_HEIGHT_M = 0.9  # head body 0.6 m above the floor + camera_height 0.3 m
CAMERA_FORWARD_M = 0.15  # camera offset ahead of the head's vertical (steering) axis
CAMERA_PITCH_RAD = -math.atan(0.1)  # optical axis 5.71 degrees below the horizon
CAMERA_NAME = "walker/egocentric"
DEFAULT_CONTROL_FREQ = 20.0  # Hz: 0.09 m and ~3.5 deg per frame, close to the procedural worlds
PHYSICS_TIMESTEP = 0.005  # s; the control period must be a whole number of physics steps
TIME_LIMIT_S = 250.0  # memory_maze_9x9 episode length in simulated seconds
TARGET_RADIUS_M = 0.6  # targets are spheres centred on the floor (half-spheres visible)
POSE_CHECK_TOL_M = 5e-3  # tolerated |P - MuJoCo camera position| (contact sinks ~0.4 mm)
POSE_CHECK_TOL_DEG = 0.05  # tolerated rotation angle between R and MuJoCo's camera

ENV_ACTION_NAMES = ("noop", "forward", "left", "right", "forward_left", "forward_right")
NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = range(len(ENV_ACTION_NAMES))
TARGET_COLOR_NAMES = ("red", "green", "blue", "purple", "yellow", "salmon")  # maze.TARGET_COLORS
WALL_COLOR_WORDS = {
    "blue": "blue",
    "cerise": "pink",
    "green": "green",
    "green_bright": "light green",
    "purple": "purple",
    "red": "red",
    "red_bright": "bright red",
    "yellow": "yellow",
}

# Exploring policy (angles in radians, distances in grid cells, times in simulated seconds).
TURN_IN_PLACE_RAD = math.radians(35.0)  # heading error above which the agent turns on the spot
ARC_RAD = math.radians(10.0)  # heading error above which it steers while moving forward
REACH_CELLS = 0.3  # distance to the goal cell's centre that counts as reached
SPIN_PROB = 0.25  # chance of a full 360-degree turn at a reached goal (revisits views)
LOOKAHEAD_CELLS = 5  # path cells considered when aiming in a straight line
CLEARANCE_CELLS = 0.2  # half-width kept free around a straight line (the ball: 0.1 cell)
LINE_STEP_CELLS = 0.1  # sampling step of the straight-line check
REVISIT_GOAL_PROB = 0.25  # chance that a new goal is an already visited cell
STUCK_WINDOW_S = 1.5  # no progress during this long ...
STUCK_DIST_CELLS = 0.05  # ... (less than this far) while driving forward triggers a replan


def _import_env_modules():
    """Import gym and memory_maze (registers the gym ids), with the install hint on failure."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is first imported
    try:
        import gym
        import memory_maze  # noqa: F401  (registers MemoryMaze-* with gym)
    except ImportError as e:
        raise ImportError(f"Memory Maze needs the memorymaze extra: {INSTALL_HINT} ({e})") from e
    return gym


def _wrap(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def agent_to_camera_pose(agent_pos: np.ndarray, agent_dir: np.ndarray) -> tuple[np.ndarray, ...]:
    """Camera pose of the Memory Maze egocentric camera from the env's agent observations.

    See the module docstring for the constants and frames.

    Shapes:
        agent_pos: (..., 2) grid cells, ``(0, 0)`` = bottom-left corner of the 9x9 maze.
        agent_dir: (..., 2) heading in the maze's x-y plane (normalised here).
        returns R (..., 3, 3) float64 world-to-camera (OpenCV axes) and P (..., 3) float64 metres
        in the maze's MuJoCo frame (z up, origin at the maze centre).
    Raises ValueError for shapes not ending in 2 or a zero / non-finite heading.
    """
    pos = np.asarray(agent_pos, dtype=np.float64)
    d = np.asarray(agent_dir, dtype=np.float64)
    if pos.shape[-1:] != (2,) or d.shape[-1:] != (2,):
        raise ValueError(f"agent_pos and agent_dir must end in 2, got {pos.shape}, {d.shape}")
    norm = np.linalg.norm(d, axis=-1, keepdims=True)  # (..., 1)
    if not (np.isfinite(norm).all() and (norm > 0).all()):
        raise ValueError("agent_dir must be a finite non-zero vector")
    d = d / norm
    head_xy = (pos - MAZE_SIZE / 2) * GRID_SCALE_M  # (..., 2) metres
    cam_xy = head_xy + CAMERA_FORWARD_M * d  # (..., 2)
    P = np.concatenate([cam_xy, np.full(cam_xy.shape[:-1] + (1,), CAMERA_HEIGHT_M)], axis=-1)
    yaw = np.arctan2(d[..., 1], d[..., 0])  # (...,) counter-clockwise from world +x
    R = R_from_yaw_pitch_roll(yaw, np.full_like(yaw, CAMERA_PITCH_RAD), np.zeros_like(yaw))
    return R, P


def _pose_error(physics, agent_pos: np.ndarray, agent_dir: np.ndarray) -> tuple[float, float]:
    """Distance (m) and angle (deg) between the pose from the agent observations and the
    egocentric camera as MuJoCo places it. MuJoCo cameras look along -z with y up, so the OpenCV
    world-to-camera rotation is ``diag(1, -1, -1) xmat^T``.
    """
    R, P = agent_to_camera_pose(agent_pos, agent_dir)
    xmat = np.asarray(physics.named.data.cam_xmat[CAMERA_NAME], dtype=np.float64).reshape(3, 3)
    R_mj = np.diag([1.0, -1.0, -1.0]) @ xmat.T
    P_mj = np.asarray(physics.named.data.cam_xpos[CAMERA_NAME], dtype=np.float64)
    cos = np.clip((np.trace(R @ R_mj.T) - 1) / 2, -1.0, 1.0)
    return float(np.linalg.norm(P - P_mj)), math.degrees(math.acos(cos))


def _wall_colors(dm_env) -> list[str]:
    """Colour words of the wall textures in use (memory_maze 1.0.3 internals: the maze arena's
    text layout marks walls with the characters of its per-region textures)."""
    arena = dm_env.task._maze_arena
    chars = set(arena.maze.entity_layer.flatten().tolist())
    textures = arena._current_wall_texture.items()
    return sorted({WALL_COLOR_WORDS.get(t.name, t.name) for ch, t in textures if ch in chars})


def _bfs(free: np.ndarray, start: tuple[int, int]) -> dict[tuple[int, int], tuple[int, int]]:
    """Breadth-first search over free cells (4-connected).

    Returns {cell: parent} in BFS (= distance) order; cells are (x, y), ``free`` is [y, x].
    """
    parent = {start: start}
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < free.shape[1] and 0 <= ny < free.shape[0] and free[ny, nx]:
                if (nx, ny) not in parent:
                    parent[(nx, ny)] = (x, y)
                    queue.append((nx, ny))
    return parent


def _clear_line(free: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a body of half-width CLEARANCE_CELLS can drive straight from a to b (grid cells)."""
    d = b - a
    length = float(np.linalg.norm(d))
    if length == 0:
        return True
    normal = np.array([-d[1], d[0]]) / length
    s = np.linspace(0.0, 1.0, max(2, math.ceil(length / LINE_STEP_CELLS) + 1))[:, None]
    pts = a + s * d  # (n, 2) points along the segment
    pts = np.concatenate([pts + CLEARANCE_CELLS * normal, pts - CLEARANCE_CELLS * normal])
    ij = np.floor(pts).astype(np.int64)  # (2n, 2) cells (x, y)
    inside = ((ij >= 0) & (ij < np.array(free.shape[::-1]))).all(axis=1)
    return bool(inside.all() and free[ij[:, 1], ij[:, 0]].all())


@dataclass
class _Explorer:
    """Scripted exploration over the maze grid.

    Picks a goal cell (a random least-visited cell, or with probability REVISIT_GOAL_PROB an
    already visited one), follows the BFS path aiming at the farthest path cell in straight-line
    reach (so rooms are crossed diagonally rather than in a staircase), turns on the spot when
    the aim is far off the heading, and at a reached goal sometimes spins a full turn so that
    views are revisited. Deterministic given ``rng`` and the env. ``free`` is ``(H, W)`` bool
    indexed ``[y, x]`` (row 0 = bottom, as the env's maze_layout).
    """

    free: np.ndarray
    rng: np.random.Generator
    steps_per_s: float
    visits: np.ndarray = field(init=False)
    path: list[tuple[int, int]] = field(default_factory=list)  # cells to the goal, next first
    turning: bool = False
    spin_left: float = 0.0  # radians still to turn in a full turn
    spin_sign: int = 1  # +1 left (counter-clockwise), -1 right
    full_turns: int = 0
    replans: int = 0
    last_heading: float | None = None
    last_cell: tuple[int, int] | None = None
    history: deque = field(init=False)  # recent positions while driving forward

    def __post_init__(self) -> None:
        self.visits = np.zeros(self.free.shape, dtype=np.int64)
        self.history = deque(maxlen=max(2, round(STUCK_WINDOW_S * self.steps_per_s)))

    def _new_goal(self, cell: tuple[int, int]) -> None:
        parent = _bfs(self.free, cell)
        cells = [c for c in parent if c != cell]
        if not cells:
            self.path = []
            return
        visited = [c for c in cells if self.visits[c[1], c[0]] > 0]
        if visited and self.rng.random() < REVISIT_GOAL_PROB:
            goal = visited[self.rng.integers(len(visited))]
        else:  # any of the least-visited cells: long routes that sweep through new ones
            least = min(self.visits[c[1], c[0]] for c in cells)
            ring = [c for c in cells if self.visits[c[1], c[0]] == least]
            goal = ring[self.rng.integers(len(ring))]
        path = [goal]
        while parent[path[-1]] != cell:
            path.append(parent[path[-1]])
        self.path = path[::-1]

    def _spin(self) -> int:
        self.spin_left, self.spin_sign = 2 * math.pi, int(self.rng.choice([-1, 1]))
        return LEFT if self.spin_sign > 0 else RIGHT

    def act(self, pos: np.ndarray, direction: np.ndarray) -> int:
        """Discrete env action for the agent at ``pos`` (grid cells) heading ``direction``."""
        heading = math.atan2(direction[1], direction[0])
        turned = 0.0 if self.last_heading is None else _wrap(heading - self.last_heading)
        self.last_heading = heading
        cell = (int(pos[0]), int(pos[1]))
        if cell != self.last_cell:
            self.visits[cell[1], cell[0]] += 1
            self.last_cell = cell
        action = self._decide(pos, heading, turned, cell)
        if action in (LEFT, RIGHT):
            self.history.clear()  # the stuck test only looks at steps that drive forward
        else:
            self.history.append(pos.copy())
        return action

    def _decide(self, pos: np.ndarray, heading: float, turned: float, cell: tuple[int, int]) -> int:
        if self.spin_left > 0:  # 1. finish a full turn
            self.spin_left -= abs(turned)
            if self.spin_left > 0:
                return LEFT if self.spin_sign > 0 else RIGHT
            self.full_turns += 1
        if (
            len(self.history) == self.history.maxlen
            and np.linalg.norm(pos - self.history[0]) < STUCK_DIST_CELLS
        ):
            self.path, self.turning = [], False  # 2. blocked: plan a new route from here
            self.replans += 1
            self.history.clear()
        if cell in self.path:  # 3. drop the path up to the cell we are in (keep the goal)
            self.path = self.path[min(self.path.index(cell) + 1, len(self.path) - 1) :]
        centre = lambda c: np.array(c, dtype=np.float64) + 0.5  # noqa: E731
        if len(self.path) == 1 and np.linalg.norm(centre(self.path[0]) - pos) < REACH_CELLS:
            self.path = []  # 4. goal reached: sometimes look all around
            if self.rng.random() < SPIN_PROB:
                return self._spin()
        if not self.path:
            self._new_goal(cell)
            if not self.path:
                return LEFT
        aim = centre(self.path[0])  # 5. farthest path cell within straight-line reach
        for c in self.path[1:LOOKAHEAD_CELLS]:
            if not _clear_line(self.free, pos, centre(c)):
                break
            aim = centre(c)
        error = _wrap(math.atan2(aim[1] - pos[1], aim[0] - pos[0]) - heading)
        if abs(error) > TURN_IN_PLACE_RAD or (self.turning and abs(error) > ARC_RAD):
            self.turning = True  # 6. turn on the spot until nearly aligned (hysteresis)
            return LEFT if error > 0 else RIGHT
        self.turning = False
        if abs(error) > ARC_RAD:
            return FORWARD_LEFT if error > 0 else FORWARD_RIGHT
        return FORWARD


def _caption(wall_words: list[str], target_words: list[str]) -> str:
    """Scene content only (RELIC §3.3: no camera motion)."""

    def join(words: list[str]) -> str:
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    n = len(target_words)
    return (
        f"A {MAZE_SIZE}x{MAZE_SIZE} maze of narrow corridors and small rooms with "
        f"{join(wall_words)} patterned walls, a dark grey hexagon-tiled floor and a blue-grey "
        f"sky, with {n} large coloured half-spheres ({join(target_words)}) standing on the "
        f"floor."
    )


def record_memory_maze(
    seed: int,
    frames: int,
    fps: int = 16,
    resolution: int = 64,
    *,
    control_freq: float = DEFAULT_CONTROL_FREQ,
) -> Episode:
    """Record one ``MemoryMaze-9x9-ExtraObs-v0`` episode with a scripted exploring policy.

    The env is built with ``gym.make(ENV_ID, seed=seed, camera_resolution=resolution,
    target_color_in_image=False, control_freq=control_freq)`` (the seed fixes the maze, targets
    and spawn; ``env.reset(seed=...)`` is not supported by memory_maze's gym wrapper). The
    target-colour border the env normally paints onto the image is turned off, so frames are pure
    camera images. Frame 0 is the reset observation; each further frame is one env step
    (``1 / control_freq`` simulated seconds). The policy is deterministic given ``seed``.

    Args:
        seed: maze / spawn / policy seed.
        frames: number of frames T (1 <= T <= 1 + 250 s * control_freq).
        fps: playback rate stored with the episode (the env itself runs at ``control_freq``).
        resolution: square image size, one of 64, 128, 256.
        control_freq: env control rate in Hz (memory_maze's default 4); ``1 / control_freq``
            must be a whole number of 5 ms physics steps (e.g. 4, 8, 10, 20, 40).

    Shapes:
        returns an :class:`Episode` with frames (T, res, res, 3) uint8, R (T, 3, 3) float64
        world-to-camera, P (T, 3) float64 metres (maze frame, z up, origin at the maze centre),
        actions (T, 13) float32 from :func:`poses_to_actions`, K (3, 3) float64 pixels.

    Raises:
        ImportError: memory_maze / gym missing (message: ``pip install 'reverie[memorymaze]'``).
        ValueError: unsupported resolution, frames out of range, fps <= 0, bad control_freq.
        RuntimeError: the env ended early, or the camera pose derived from ``agent_pos`` /
            ``agent_dir`` disagrees with MuJoCo's (a memory_maze version with other geometry).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    substeps = 1.0 / (control_freq * PHYSICS_TIMESTEP) if control_freq > 0 else 0.0
    if not (math.isfinite(substeps) and substeps >= 1 and abs(substeps - round(substeps)) < 1e-9):
        raise ValueError(
            f"1 / control_freq must be a whole number of {PHYSICS_TIMESTEP} s "
            f"physics steps (e.g. 4, 8, 10, 20, 40 Hz), got {control_freq}"
        )
    max_frames = 1 + round(TIME_LIMIT_S * control_freq)
    if not 1 <= frames <= max_frames:
        raise ValueError(f"frames must be in [1, {max_frames}] at {control_freq} Hz, got {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")

    gym = _import_env_modules()
    env = gym.make(
        ENV_ID,
        disable_env_checker=True,
        seed=seed,
        camera_resolution=resolution,
        target_color_in_image=False,
        control_freq=control_freq,
    )
    try:
        dm_env = env.unwrapped.env  # memory_maze's dm_env wrapper stack (physics, task)
        obs = env.reset()
        physics = dm_env.physics
        fovy = float(physics.named.model.cam_fovy[CAMERA_NAME])
        wall_words = _wall_colors(dm_env)
        layout = np.asarray(obs["maze_layout"], dtype=np.uint8)  # (9, 9) [y, x], 1 = free
        targets_pos = np.asarray(obs["targets_pos"], dtype=np.float64)  # (n, 2) grid cells

        policy = _Explorer(
            free=layout.astype(bool), rng=np.random.default_rng(seed), steps_per_s=control_freq
        )
        images, agent_pos, agent_dir, env_actions = [], [], [], []
        check_m, check_deg = 0.0, 0.0
        for t in range(frames):
            if t > 0:
                a = policy.act(agent_pos[-1], agent_dir[-1])
                obs, _, done, _ = env.step(a)
                env_actions.append(a)
                if done and t < frames - 1:
                    raise RuntimeError(f"{ENV_ID} ended after {t} steps")
            images.append(np.array(obs["image"], dtype=np.uint8))
            agent_pos.append(np.array(obs["agent_pos"], dtype=np.float64))
            agent_dir.append(np.array(obs["agent_dir"], dtype=np.float64))
            err_m, err_deg = _pose_error(physics, agent_pos[-1], agent_dir[-1])
            check_m, check_deg = max(check_m, err_m), max(check_deg, err_deg)
        if check_m > POSE_CHECK_TOL_M or check_deg > POSE_CHECK_TOL_DEG:
            raise RuntimeError(
                f"camera pose from agent_pos/agent_dir is off MuJoCo's camera by "
                f"{check_m:.3g} m / {check_deg:.3g} deg: memory_maze geometry "
                f"differs from version 1.0.3"
            )
    finally:
        env.close()

    R, P = agent_to_camera_pose(np.stack(agent_pos), np.stack(agent_dir))  # (T,3,3), (T,3)
    actions, scale = poses_to_actions(R, P)
    cells = {(int(x), int(y)) for x, y in agent_pos}
    n_targets = len(targets_pos)
    target_words = list(TARGET_COLOR_NAMES[:n_targets])  # ExtraObs-v0 keeps the colour order
    sim_s = (frames - 1) / control_freq
    stats = {
        "world": "memory-maze",
        "env": ENV_ID,
        "env_steps": frames - 1,
        "control_freq_hz": control_freq,
        "sim_seconds": sim_s,
        "playback_speedup": fps / control_freq,
        "maze_fps_note": (
            f"one env step ({1 / control_freq:g} s simulated) per frame; at {fps} "
            f"fps the video plays {fps / control_freq:g}x real time"
        ),
        "env_actions": env_actions,
        "env_action_names": list(ENV_ACTION_NAMES),
        "cells_visited": len(cells),
        "free_cells": int(layout.sum()),
        "full_turns": policy.full_turns,
        "replans": policy.replans,
        "pose_check_max_err_m": check_m,
        "pose_check_max_err_deg": check_deg,
    }
    scene = {
        "world": "memory-maze",
        "env": ENV_ID,
        "seed": seed,
        "resolution": resolution,
        "maze_size": MAZE_SIZE,
        "grid_scale_m": GRID_SCALE_M,
        "frame": "MuJoCo maze frame: z up, metres, origin at the maze centre; grid cell (i, j) "
        "covers x in [2i - 9, 2i - 7], y in [2j - 9, 2j - 7]",
        "maze_layout": layout.tolist(),  # rows = grid y from the bottom, 1 = free cell
        "wall_colors": wall_words,
        "targets": [
            {
                "color": c,
                "radius_m": TARGET_RADIUS_M,
                "pos_m": [*((p - MAZE_SIZE / 2) * GRID_SCALE_M).tolist(), 0.0],
            }
            for c, p in zip(target_words, targets_pos, strict=True)
        ],
        "camera": {
            "fovy_deg": fovy,
            "height_m": CAMERA_HEIGHT_M,
            "pitch_deg": math.degrees(CAMERA_PITCH_RAD),
            "forward_offset_m": CAMERA_FORWARD_M,
        },
    }
    log.info(
        "memory maze seed %d: %d frames, %d/%d cells visited",
        seed,
        frames,
        len(cells),
        int(layout.sum()),
    )
    return Episode(
        frames=np.stack(images),
        R=R,
        P=P,
        actions=actions,
        action_scale=scale,
        K=intrinsics(resolution, resolution, fovy),
        fps=float(fps),
        caption=_caption(wall_words, target_words),
        scene=scene,
        trajectory="memory-maze-explore",
        stats=stats,
    )
