"""Trajectory families as segment plans: exploration and deliberate revisits.

RELIC (arXiv 2512.04040 §3) collects human-driven camera paths that deliberately come back to
what the camera saw before, so that a world model must use its long-horizon memory. Each family
is a generator of :class:`Segment` s that reads the live camera state whenever the previous
segment has been executed (:mod:`reverie.worlds.trajectory` runs them):

- ``random``: walk to random free goals looking along the motion or at an object, pause, turn
  to look at objects, occasional one-way look-arounds, sideways trucking; no deliberate returns.
- ``revisit``: record a viewpoint, then either turn away by >= 90 degrees and turn back to it,
  or travel away (to another room when there is one, else the far side of the area) and return
  to a recorded viewpoint (position and orientation, with small natural variation); sometimes
  move on to record a new viewpoint.
- ``mixed``: each episode is drawn from either behaviour with equal probability.

Angles are radians, positions world metres (z up).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from reverie.worlds.controller import CameraState
    from reverie.worlds.freespace import FreeSpace
    from reverie.worlds.spec import SceneSpec
    from reverie.worlds.trajectory import TrajectoryConfig

GOAL_CANDIDATES = 8  # free points drawn when picking a goal
MOTION_PITCH_DEG = (-10.0, 5.0)  # pitch range while walking and looking ahead
LOOK_POINT_MAX_DIST = 6.0  # m, objects farther than this are not looked at
LOOK_POINT_MIN_DIST = 0.8  # m
LOOK_WHILE_WALKING_DEG = 60.0  # max angle between a looked-at object and the goal direction
TRUCK_DISTANCE = (0.6, 1.5)  # m, sideways trucking move
TRUCK_SPEED = (0.3, 0.6)  # m/s
PASS_THROUGH_DEG = 150.0  # larger pans get an intermediate keyframe (keeps the pan direction)


@dataclass(frozen=True, eq=False)
class Segment:
    """One planned piece of camera motion (RELIC arXiv 2512.04040 §3 behaviours).

    Attributes:
        kind: "move" (follow ``path``), "turn" (visit ``keyframes`` in place) or "pause".
        label: behaviour tag, e.g. "explore", "look_around", "turn_away", "turn_back",
            "travel_away", "return", "dwell", "record", "truck".
        z: target camera height [m].
        path: (N, 2) world xy waypoints of a move [m], from the start to the goal.
        speed: cruise speed of a move [m/s].
        pitch: pitch while looking along the motion [rad].
        look_point: (3,) world point to look at during a move, or None.
        gaze_fixed: (yaw, pitch) held during a move / pause [rad], or None.
        final: (yaw, pitch) to reach at the end of a move [rad], or None.
        sideways: speed factor when walking at 90 deg to the view direction (1 = no slowdown).
        keyframes: ((yaw, pitch, hold_s), ...) of a turn [rad, rad, s]; hold 0 = pass through.
        duration: length of a pause [s].
        micro: gaze micro-motion during a pause (1 = on, 0 = off).
        t_start, t_end: execution times [s] (filled in after execution).
        timed_out: whether execution was abandoned at its deadline.
    """

    kind: Literal["move", "turn", "pause"]
    label: str
    z: float
    path: np.ndarray | None = None
    speed: float = 0.0
    pitch: float = 0.0
    look_point: tuple[float, float, float] | None = None
    gaze_fixed: tuple[float, float] | None = None
    final: tuple[float, float] | None = None
    sideways: float = 0.25
    keyframes: tuple[tuple[float, float, float], ...] = ()
    duration: float = 0.0
    micro: float = 1.0
    t_start: float = math.nan
    t_end: float = math.nan
    timed_out: bool = False


@dataclass(frozen=True)
class Viewpoint:
    """A recorded camera pose to come back to: centre p (3,) [m], yaw and pitch [rad], time [s]."""

    p: tuple[float, float, float]
    yaw: float
    pitch: float
    t: float


@dataclass
class BehaviourContext:
    """What the behaviours see: the scene, its free space, the live camera state and history."""

    fs: FreeSpace
    spec: SceneSpec
    cfg: TrajectoryConfig
    rng: np.random.Generator
    state: CameraState
    viewpoints: list[Viewpoint] = field(default_factory=list)
    z: float = math.nan  # current height target [m]

    def __post_init__(self) -> None:
        if math.isnan(self.z):
            self.z = float(self.state.p[2])


# ---------------------------------------------------------------------------- helpers
def _u(ctx: BehaviourContext, lo_hi: tuple[float, float]) -> float:
    return float(ctx.rng.uniform(*lo_hi))


def _sign(ctx: BehaviourContext) -> float:
    return 1.0 if ctx.rng.random() < 0.5 else -1.0


def _pitch(ctx: BehaviourContext, lo_hi_deg=MOTION_PITCH_DEG) -> float:
    return math.radians(_u(ctx, lo_hi_deg))


def _z_target(ctx: BehaviourContext) -> float:
    """Keep the height target, or (pedestal) pick a new one inside the allowed range."""
    z_lo, z_hi = ctx.fs.z_range
    if ctx.rng.random() < ctx.cfg.z_change_prob and z_hi > z_lo:
        ctx.z = float(ctx.rng.uniform(z_lo, z_hi))
    return ctx.z


def _pick_goal(
    ctx: BehaviourContext,
    min_dist: float,
    max_dist: float = math.inf,
    *,
    away_from=None,
    other_room: bool = False,
) -> np.ndarray | None:
    """A free goal reachable from the camera, preferably min_dist..max_dist from ``away_from``.

    Among GOAL_CANDIDATES random reachable points: those in another room (if asked and any),
    then a random one in the distance range, else the nearest beyond min_dist, else the
    farthest. None if nothing is reachable.
    """
    fs, here = ctx.fs, ctx.state.p[:2]
    ref = here if away_from is None else np.asarray(away_from)[:2]
    cands = []
    for clearance in (ctx.cfg.goal_clearance, 0.0):
        try:
            cands = [
                fs.sample_free(ctx.rng, clearance, connected_to=here)
                for _ in range(GOAL_CANDIDATES)
            ]
            break
        except ValueError:
            continue
    if not cands:
        return None
    cands = np.stack(cands)  # (C, 2)
    if other_room and len(ctx.spec.rooms) > 1:
        elsewhere = fs.room_of(cands) != fs.room_of(ref)
        if elsewhere.any():
            cands = cands[elsewhere]
    dist = np.linalg.norm(cands - ref, axis=-1)  # (C,)
    in_range = np.nonzero((dist >= min_dist) & (dist <= max_dist))[0]
    if len(in_range):
        return cands[ctx.rng.choice(in_range)]
    beyond = dist >= min_dist
    if beyond.any():
        return cands[int(np.argmin(np.where(beyond, dist, np.inf)))]
    return cands[int(np.argmax(dist))]


def _component(ctx: BehaviourContext, xy) -> int:
    """Planning-grid component of a point (-1 if it is not free or has no free cell nearby)."""
    try:
        return ctx.fs.component_of(xy)
    except ValueError:
        return -1


def _pause(ctx: BehaviourContext, label: str, seconds: float, micro: float = 1.0) -> Segment:
    return Segment("pause", label, z=_z_target(ctx), duration=seconds, micro=micro)


def _move(ctx: BehaviourContext, goal, label: str, **kw) -> Segment:
    """A move along the shortest collision-free path to ``goal`` (a short pause if none)."""
    if goal is None:
        return _pause(ctx, label + "_blocked", _u(ctx, ctx.cfg.pause_seconds))
    try:
        path = ctx.fs.shortest_path(ctx.state.p[:2], goal, margin=ctx.cfg.path_margin)
    except ValueError:
        return _pause(ctx, label + "_blocked", _u(ctx, ctx.cfg.pause_seconds))
    kw.setdefault("z", _z_target(ctx))
    kw.setdefault("speed", _u(ctx, ctx.cfg.cruise_speed))
    kw.setdefault("pitch", _pitch(ctx))
    return Segment("move", label, path=path, **kw)


def _object_point(ctx: BehaviourContext, towards: float | None = None) -> np.ndarray | None:
    """Centre (3,) of a random object at a comfortable distance (near heading ``towards``)."""
    if not ctx.spec.objects:
        return None
    pos = np.array([o.pos for o in ctx.spec.objects])  # (M, 3)
    rel = pos[:, :2] - ctx.state.p[:2]
    dist = np.linalg.norm(rel, axis=-1)
    ok = (dist > LOOK_POINT_MIN_DIST) & (dist < LOOK_POINT_MAX_DIST)
    if towards is not None:
        off = np.angle(np.exp(1j * (np.arctan2(rel[:, 1], rel[:, 0]) - towards)))
        ok &= np.abs(off) < math.radians(LOOK_WHILE_WALKING_DEG)
    idx = np.nonzero(ok)[0]
    return pos[ctx.rng.choice(idx)] if len(idx) else None


def _look_angles(ctx: BehaviourContext, point: np.ndarray) -> tuple[float, float]:
    d = point - ctx.state.p
    lim = math.radians(ctx.cfg.max_pitch)
    pitch = min(max(math.atan2(d[2], math.hypot(d[0], d[1])), -lim), lim)
    return math.atan2(d[1], d[0]), pitch


def _pan(yaw0: float, delta: float, pitch: float, hold: float) -> list[tuple[float, float, float]]:
    """Keyframes panning by ``delta`` (either sign, may exceed pi) from heading yaw0."""
    keys = []
    if abs(delta) > math.radians(PASS_THROUGH_DEG):
        keys.append((yaw0 + delta / 2, pitch, 0.0))
    keys.append((yaw0 + delta, pitch, hold))
    return keys


def _record(ctx: BehaviourContext) -> Iterator[Segment]:
    """Pause briefly and remember the pose reached as a viewpoint to come back to."""
    yield _pause(ctx, "record", _u(ctx, (0.8, 1.5)), micro=0.5)
    s = ctx.state
    ctx.viewpoints.append(Viewpoint(tuple(float(v) for v in s.p), s.yaw, s.pitch, s.t))


# ---------------------------------------------------------------------------- episodes
def explore_episode(ctx: BehaviourContext) -> Iterator[Segment]:
    """One exploration step: walk, pause, look at an object, look around or truck sideways."""
    cfg, rng, s = ctx.cfg, ctx.rng, ctx.state
    r = rng.random()
    if r < 0.55:
        goal = _pick_goal(ctx, cfg.min_goal_distance)
        look = None
        if goal is not None and rng.random() < 0.25:
            heading = math.atan2(goal[1] - s.p[1], goal[0] - s.p[0])
            look = _object_point(ctx, towards=heading)
        kw = {} if look is None else {"look_point": tuple(look)}
        yield _move(ctx, goal, "explore", **kw)
    elif r < 0.68:
        yield _pause(ctx, "pause", _u(ctx, cfg.pause_seconds))
    elif r < 0.80:
        point = _object_point(ctx)
        if point is None:
            yield _pause(ctx, "pause", _u(ctx, cfg.pause_seconds))
            return
        yaw, pitch = _look_angles(ctx, point)
        yield Segment(
            "turn",
            "look_at_object",
            z=_z_target(ctx),
            keyframes=((yaw, pitch, _u(ctx, cfg.pause_seconds)),),
        )
    elif r < 0.90:
        delta = _sign(ctx) * math.radians(_u(ctx, cfg.look_around_deg))
        keys = _pan(s.yaw, delta, _pitch(ctx), _u(ctx, cfg.pause_seconds))
        yield Segment("turn", "look_around", z=_z_target(ctx), keyframes=tuple(keys))
    else:
        side = _sign(ctx)
        for direction in (side, -side):  # truck left or right, whichever side is open
            offset = direction * _u(ctx, TRUCK_DISTANCE)
            goal = s.p[:2] + offset * np.array([-math.sin(s.yaw), math.cos(s.yaw)])
            if ctx.fs.is_free(goal) and ctx.fs.segment_clearance(s.p[:2], goal) >= 0.05:
                yield Segment(
                    "move",
                    "truck",
                    z=_z_target(ctx),
                    path=np.stack([s.p[:2], goal]),
                    speed=_u(ctx, TRUCK_SPEED),
                    gaze_fixed=(s.yaw, s.pitch),
                    sideways=1.0,
                )
                return
        yield _pause(ctx, "pause", _u(ctx, cfg.pause_seconds))


def turn_away_episode(ctx: BehaviourContext) -> Iterator[Segment]:
    """Record the view, pan away by look_away_deg (>= 90), look around there, turn back."""
    cfg, rng = ctx.cfg, ctx.rng
    yield from _record(ctx)
    v = ctx.viewpoints[-1]
    delta = _sign(ctx) * math.radians(_u(ctx, cfg.look_away_deg))
    keys = _pan(v.yaw, delta, _pitch(ctx), _u(ctx, cfg.pause_seconds))
    if rng.random() < 0.5:  # a second look a little further on
        keys.append(
            (
                v.yaw + delta + _sign(ctx) * math.radians(_u(ctx, (20.0, 45.0))),
                _pitch(ctx),
                _u(ctx, (0.5, 1.2)),
            )
        )
    yield Segment("turn", "turn_away", z=ctx.z, keyframes=tuple(keys))
    noise = math.radians(cfg.return_angle_noise)
    back = _pan(
        v.yaw + delta,
        -delta + rng.normal(0.0, noise),
        v.pitch + rng.normal(0.0, noise),
        _u(ctx, cfg.dwell_seconds),
    )
    yield Segment("turn", "turn_back", z=ctx.z, keyframes=tuple(back))


def travel_return_episode(ctx: BehaviourContext) -> Iterator[Segment]:
    """Travel away from a recorded viewpoint (another room if any) and come back to it."""
    cfg, rng = ctx.cfg, ctx.rng
    label = _component(ctx, ctx.state.p[:2])
    reachable = [v for v in ctx.viewpoints if _component(ctx, v.p[:2]) == label]
    if not reachable or rng.random() < 0.25:
        yield from _record(ctx)
        reachable = ctx.viewpoints[-1:]
    v = reachable[-1] if rng.random() < 0.5 else reachable[int(rng.integers(len(reachable)))]
    far = _pick_goal(ctx, *cfg.far_distance, away_from=v.p, other_room=True)
    yield _move(ctx, far, "travel_away")
    if rng.random() < 0.5:
        delta = _sign(ctx) * math.radians(_u(ctx, cfg.look_around_deg))
        yield Segment(
            "turn",
            "look_around",
            z=_z_target(ctx),
            keyframes=tuple(_pan(ctx.state.yaw, delta, _pitch(ctx), _u(ctx, cfg.pause_seconds))),
        )
    else:
        yield _pause(ctx, "away", _u(ctx, cfg.pause_seconds))
    if rng.random() < 0.4:
        yield from _record(ctx)
    target = np.asarray(v.p[:2]) + np.clip(
        rng.normal(0.0, cfg.return_position_noise, 2),
        -2 * cfg.return_position_noise,
        2 * cfg.return_position_noise,
    )
    if _component(ctx, target) != label:
        target = np.asarray(v.p[:2])
    noise = math.radians(cfg.return_angle_noise)
    lim = math.radians(cfg.max_pitch)
    final = (v.yaw + rng.normal(0.0, noise), min(max(v.pitch + rng.normal(0.0, noise), -lim), lim))
    z = v.p[2] + float(np.clip(rng.normal(0.0, 0.03), -0.06, 0.06))
    ctx.z = z
    yield _move(ctx, target, "return", final=final, z=z)
    yield _pause(ctx, "dwell", _u(ctx, cfg.dwell_seconds), micro=0.5)


def new_viewpoint_episode(ctx: BehaviourContext) -> Iterator[Segment]:
    """Walk somewhere new and record the view there."""
    yield _move(ctx, _pick_goal(ctx, ctx.cfg.min_goal_distance), "explore")
    yield from _record(ctx)


def revisit_episode(ctx: BehaviourContext, *, may_turn: bool = True) -> Iterator[Segment]:
    """One deliberate revisit: turn away and back (45%), travel and return (45%), or move on.

    With ``may_turn=False`` the turn-away share goes to walking somewhere new, so a path never
    stands still through two turn-aways in a row.
    """
    r = ctx.rng.random()
    if r < 0.45:
        yield from (turn_away_episode if may_turn else new_viewpoint_episode)(ctx)
    elif r < 0.9:
        yield from travel_return_episode(ctx)
    else:
        yield from new_viewpoint_episode(ctx)


def revisit_family(ctx: BehaviourContext) -> Iterator[Segment]:
    """Deliberate revisits only (RELIC §3); each episode records the views it returns to.

    A turn-away episode is never followed by another one, so the camera also translates.
    """
    may_turn = True
    while True:
        turned = False
        for segment in revisit_episode(ctx, may_turn=may_turn):
            turned |= segment.label == "turn_away"
            yield segment
        may_turn = not turned


def random_family(ctx: BehaviourContext) -> Iterator[Segment]:
    """Exploration without deliberate returns."""
    while True:
        yield from explore_episode(ctx)


def mixed_family(ctx: BehaviourContext) -> Iterator[Segment]:
    """Random interleaving of exploration and revisit episodes."""
    while True:
        episode = revisit_episode if ctx.rng.random() < 0.5 else explore_episode
        yield from episode(ctx)


FAMILIES = {"revisit": revisit_family, "random": random_family, "mixed": mixed_family}
"""Family name -> generator of segments, given a :class:`BehaviourContext`."""
