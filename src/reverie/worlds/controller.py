"""Rate- and acceleration-limited camera controller and the segment runner that drives it.

Part of the trajectory sampler (:mod:`reverie.worlds.trajectory`, RELIC arXiv 2512.04040 §3).
The controller integrates position, heading (yaw) and elevation (pitch) at a fixed step ``dt``:
each step moves the velocity / angular rate towards the commanded one by at most
``limit_accel * dt``, clips it to the speed / rate limit, and integrates. Braking profiles
``v <= sqrt(2 b d)`` (``b = brake_fraction * limit``) stop the camera at its targets, at the
pitch and height limits, and in front of obstacles (a barrier on the speed towards the nearest
obstacle), so the hard collision fallback (slide along the obstacle, else stop) almost never
fires. Angles are radians internally; the config gives degrees.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reverie.worlds.behaviours import Segment

if TYPE_CHECKING:
    from reverie.worlds.freespace import FreeSpace
    from reverie.worlds.trajectory import TrajectoryConfig

TRACK_GAIN = 3.0  # 1/s, proportional gain of the angle / height controllers near their target
POSITION_GAIN = 2.0  # 1/s, proportional gain of the speed profile near the goal
BARRIER_SLACK = 0.02  # m, clearance kept in front of obstacles by the braking barrier
ARRIVE_DIST = 0.05  # m, a move is done within this distance of its goal...
ARRIVE_SPEED = 0.05  # m/s, ...below this speed...
ARRIVE_ANGLE = math.radians(2.0)  # ...and within this angle of its final orientation
SETTLE_RATE = math.radians(5.0)  # rad/s, a keyframe is reached below this rate
PASS_ANGLE = math.radians(20.0)  # a keyframe with no hold is passed within this angle
FINAL_BLEND = 1.0  # m, a move turns to its final orientation within this distance of the goal
SETTLE_SPEED = 0.5  # m/s, speed limit while turning to the final orientation near the goal
MOTION_GAZE_MIN = 0.3  # m, "motion" gaze keeps its heading closer than this to the goal
LOOK_RELEASE = math.radians(60.0)  # a look point this far off the motion direction is dropped
MICRO_GAZE = math.radians(3.0)  # amplitude of gaze micro-motion during pauses
VERTICAL_ACCEL_SHARE = 0.4  # fraction of max_accel reserved for the vertical axis
TIMEOUT_SLACK = 8.0  # s, added to a segment's nominal duration before it is abandoned


def wrap(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def heading_pitch(vec) -> tuple[float, float]:
    """(yaw, pitch) in radians of the direction vec (3,) in the z-up world frame."""
    return math.atan2(vec[1], vec[0]), math.atan2(vec[2], math.hypot(vec[0], vec[1]))


@dataclass
class CameraState:
    """Mutable controller state: position p (3,) m, velocity v (3,) m/s, yaw / pitch [rad]
    with their rates [rad/s], and time t [s]."""

    p: np.ndarray
    v: np.ndarray
    yaw: float
    pitch: float
    yaw_rate: float = 0.0
    pitch_rate: float = 0.0
    t: float = 0.0


@dataclass(frozen=True)
class Command:
    """Controller targets: horizontal velocity v_xy (2,) m/s, height z m, yaw and pitch rad."""

    v_xy: np.ndarray
    z: float
    yaw: float
    pitch: float


def _rate_towards(error: float, rate_max: float, brake: float) -> float:
    """Desired rate closing ``error``: min(rate_max, sqrt(2 b |e|), gain |e|), b = ``brake``.

    Following it needs at most ``2 b`` deceleration (the limit when brake_fraction = 0.5).
    """
    mag = min(rate_max, math.sqrt(2.0 * brake * abs(error)), TRACK_GAIN * abs(error))
    return math.copysign(mag, error)


def _accelerate(rate: float, desired: float, accel: float, dt: float, rate_max: float) -> float:
    step = min(max(desired - rate, -accel * dt), accel * dt)
    return min(max(rate + step, -rate_max), rate_max)


class Controller:
    """Integrates :class:`CameraState` under a :class:`Command` with limits from the config."""

    def __init__(self, fs: FreeSpace, cfg: TrajectoryConfig, dt: float) -> None:
        self.fs, self.cfg, self.dt = fs, cfg, dt
        self.yaw_limits = (math.radians(cfg.max_yaw_rate), math.radians(cfg.max_yaw_accel))
        self.pitch_limits = (math.radians(cfg.max_pitch_rate), math.radians(cfg.max_pitch_accel))
        self.max_pitch = math.radians(cfg.max_pitch)
        self.collision_stops = 0
        self._clear_at, self._clear_from = -math.inf, np.zeros(2)  # last exact clearance

    def step(self, s: CameraState, cmd: Command) -> None:
        """Advance ``s`` by one step of ``dt`` seconds towards ``cmd`` (in place)."""
        dt, fb = self.dt, self.cfg.brake_fraction
        # Heading: wrap-around error, braking profile, rate/accel limits.
        rate_max, accel = self.yaw_limits
        want = _rate_towards(wrap(cmd.yaw - s.yaw), rate_max, fb * accel)
        s.yaw_rate = _accelerate(s.yaw_rate, want, accel, dt, rate_max)
        s.yaw = wrap(s.yaw + s.yaw_rate * dt)
        # Pitch: same, plus braking barriers at +-max_pitch.
        rate_max, accel = self.pitch_limits
        lim = self.max_pitch
        want = _rate_towards(cmd.pitch - s.pitch, rate_max, fb * accel)
        want = min(want, math.sqrt(2 * fb * accel * max(lim - s.pitch, 0.0)))
        want = max(want, -math.sqrt(2 * fb * accel * max(lim + s.pitch, 0.0)))
        s.pitch_rate = _accelerate(s.pitch_rate, want, accel, dt, rate_max)
        s.pitch = min(max(s.pitch + s.pitch_rate * dt, -lim), lim)
        self._translate(s, cmd)
        s.t += dt

    def _translate(self, s: CameraState, cmd: Command) -> None:
        cfg, dt = self.cfg, self.dt
        brake = cfg.brake_fraction * cfg.max_accel
        v_des = np.asarray(cmd.v_xy, dtype=np.float64)
        speed = math.hypot(*v_des)
        if speed > cfg.max_speed:
            v_des = v_des * (cfg.max_speed / speed)
        # Barrier: the speed towards the nearest obstacle stays below sqrt(2 b (clearance)).
        # Clearance is 1-Lipschitz, so a bound from an earlier exact evaluation often shows
        # that the barrier cannot bind and saves the evaluation.
        fast = max(speed, math.hypot(s.v[0], s.v[1]))
        clear = self._clear_at - math.dist(s.p[:2], self._clear_from)  # lower bound
        normal = None
        if clear < BARRIER_SLACK + fast**2 / (2 * brake) + cfg.max_speed * dt:
            clear, normal = self._exact_clearance(s.p[:2])
            approach = -float(v_des @ normal)
            cap = math.sqrt(2 * brake * max(clear - BARRIER_SLACK, 0.0))
            if approach > cap:
                v_des = v_des + (approach - cap) * normal
        # Height: braking profile towards the target, which is clipped into the allowed range.
        # The vertical axis gets a reserved share of the acceleration budget, the horizontal
        # plane the rest, so the 3D acceleration norm stays within max_accel.
        a_vert = VERTICAL_ACCEL_SHARE * cfg.max_accel
        z_lo, z_hi = self.fs.z_range
        dz = min(max(cmd.z, z_lo), z_hi) - s.p[2]
        vz = _rate_towards(dz, cfg.max_vertical_speed, cfg.brake_fraction * a_vert)
        dvz = min(max(vz - s.v[2], -a_vert * dt), a_vert * dt)
        dv = v_des - s.v[:2]
        budget = math.sqrt(max((cfg.max_accel * dt) ** 2 - dvz**2, 0.0))
        norm = math.hypot(dv[0], dv[1])
        if norm > budget:
            dv *= budget / norm
        # Speed limits are projections, so the velocity change stays within the budget.
        v = s.v + np.array([dv[0], dv[1], dvz])
        speed = math.hypot(v[0], v[1])
        if speed > cfg.max_speed:
            v[:2] *= cfg.max_speed / speed
        v[2] = min(max(v[2], -cfg.max_vertical_speed), cfg.max_vertical_speed)
        p = s.p + v * dt
        # The step is free if it is shorter than the clearance (exact test otherwise).
        z_lo, z_hi = self.fs.z_range
        short = math.hypot(v[0], v[1]) * dt < clear and z_lo <= p[2] <= z_hi
        if not (short or self.fs.is_free(p)):  # hard fallback: slide along the obstacle, else stop
            self.collision_stops += 1
            if normal is None:
                normal = self._exact_clearance(s.p[:2])[1]
            into = min(float(v[:2] @ normal), 0.0)
            v[:2] -= into * normal
            p = s.p + v * dt
            if not self.fs.is_free(p):
                v[:] = 0.0
                p = s.p.copy()
        s.p, s.v = p, v

    def _exact_clearance(self, xy: np.ndarray) -> tuple[float, np.ndarray]:
        """Exact clearance (m) and its unit gradient (2,) at xy; remembered as a bound."""
        clear, normal = self.fs.clearance_gradient(xy)
        self._clear_at, self._clear_from = float(clear), xy.copy()
        return float(clear), normal


class SegmentRunner:
    """Turns one :class:`Segment` into controller commands until it is done.

    move: pure pursuit along ``segment.path`` (lookahead ``cfg.lookahead``) with speed
    ``min(cruise, sqrt(2 b d_goal), sqrt(v_corner^2 + 2 b d_corner))``, reduced when the camera
    does not face the motion direction (forward-dominant walking); gaze along the motion, at a
    point, or fixed; turns to ``segment.final`` near the goal.
    turn: holds position and visits the (yaw, pitch, hold) keyframes in order.
    pause: holds position and orientation (with slight gaze micro-motion) for its duration.
    """

    def __init__(
        self, segment: Segment, s: CameraState, cfg: TrajectoryConfig, fs: FreeSpace
    ) -> None:
        self.seg, self.cfg, self.t0 = segment, cfg, s.t
        self.done = False
        self.timed_out = False
        self.gaze = (s.yaw, s.pitch) if segment.gaze_fixed is None else segment.gaze_fixed
        self.key, self.hold_start = 0, None
        self.released = False  # a move's look_point has fallen behind; look ahead instead
        self.brake = cfg.brake_fraction * cfg.max_accel
        nominal = (
            segment.duration
            + sum(k[2] for k in segment.keyframes)
            + 2 * len(segment.keyframes)
            + 4.0
        )
        if segment.path is not None:
            path = segment.path
            seg_len = np.linalg.norm(np.diff(path, axis=0), axis=1)  # (N-1,)
            self.cum = np.concatenate([[0.0], np.cumsum(seg_len)])  # (N,)
            self.seg_start, self.seg_dir = path[:-1], np.diff(path, axis=0)  # (N-1, 2) each
            self.seg_len2 = np.maximum(seg_len**2, 1e-12)  # (N-1,)
            self.cum_list, self.path_list = self.cum.tolist(), path.tolist()
            self.s = 0.0
            d_in, d_out = np.diff(path, axis=0)[:-1], np.diff(path, axis=0)[1:]
            cos = np.sum(d_in * d_out, -1) / np.maximum(seg_len[:-1] * seg_len[1:], 1e-12)
            half = 0.5 * np.arccos(np.clip(cos, -1.0, 1.0))  # (N-2,) half turning angles
            # Pure pursuit rounds a corner with radius ~ lookahead / (2 sin(turn / 2)).
            self.corner_speed = np.sqrt(self.brake * cfg.lookahead / (2 * np.sin(half) + 1e-6))
            nominal += self.cum[-1] / min(segment.speed, 0.5)
        self.deadline = s.t + nominal + TIMEOUT_SLACK

    def finished(self, t: float) -> Segment:
        """The segment annotated with its start / end time and whether it timed out."""
        return dataclasses.replace(self.seg, t_start=self.t0, t_end=t, timed_out=self.timed_out)

    def _at(self, s: float) -> tuple[float, float]:
        """Point (x, y) at arc length s along the path."""
        i = min(max(bisect.bisect_left(self.cum_list, s) - 1, 0), len(self.cum_list) - 2)
        (ax, ay), (bx, by) = self.path_list[i], self.path_list[i + 1]
        length = self.cum_list[i + 1] - self.cum_list[i]
        f = (s - self.cum_list[i]) / length if length > 0 else 0.0
        return ax + (bx - ax) * f, ay + (by - ay) * f

    def command(self, st: CameraState) -> Command:
        """Command for the current state; sets ``self.done`` when the segment is complete."""
        seg = self.seg
        if st.t > self.deadline:
            self.done = self.timed_out = True
        if seg.kind == "move":
            return self._move(st)
        yaw, pitch = self.gaze
        if seg.kind == "turn":
            yaw, pitch, hold = seg.keyframes[self.key]
            err = max(abs(wrap(yaw - st.yaw)), abs(pitch - st.pitch))
            if hold <= 0 and err < PASS_ANGLE:
                self.key += 1
            elif self.hold_start is None and err < ARRIVE_ANGLE and abs(st.yaw_rate) < SETTLE_RATE:
                self.hold_start = st.t
            elif self.hold_start is not None and st.t - self.hold_start >= hold:
                self.key, self.hold_start = self.key + 1, None
            if self.key == len(seg.keyframes):
                self.done = True
                self.key -= 1
        else:  # pause, with slow gaze micro-motion
            phase = 2 * math.pi * (st.t - self.t0) / max(seg.duration, 1e-3)
            yaw += MICRO_GAZE * math.sin(phase) * seg.micro
            pitch += 0.5 * MICRO_GAZE * math.sin(2 * phase) * seg.micro
            if st.t - self.t0 >= seg.duration:
                self.done = True
        return Command(np.zeros(2), seg.z, yaw, pitch)

    def _move(self, st: CameraState) -> Command:
        seg, cfg = self.seg, self.cfg
        p = st.p[:2]
        # Progress: closest point of the path within a window ahead of the current progress.
        a, d = self.seg_start, self.seg_dir  # (N-1, 2)
        u = np.clip(((p - a) * d).sum(-1) / self.seg_len2, 0.0, 1.0)  # (N-1,)
        s_cand = self.cum[:-1] + u * (self.cum[1:] - self.cum[:-1])  # (N-1,)
        off = a + u[:, None] * d - p  # (N-1, 2)
        dist = np.hypot(off[:, 0], off[:, 1])
        dist[(s_cand < self.s - 0.25) | (s_cand > self.s + 1.0)] = np.inf
        if np.isfinite(dist).any():
            self.s = max(self.s, float(s_cand[np.argmax(-dist)]))
        total, end = self.cum_list[-1], self.path_list[-1]
        rem = max(total - self.s, math.dist(end, p))
        look = self._at(min(self.s + cfg.lookahead, total))
        direction = np.array([look[0] - p[0], look[1] - p[1]])
        norm = math.hypot(direction[0], direction[1])
        direction = direction / norm if norm > 1e-6 else np.zeros(2)
        # Speed profile: cruise, brake for the goal and the corners ahead.
        speed = min(seg.speed, math.sqrt(2 * self.brake * rem), POSITION_GAIN * rem)
        ahead = self.cum[1:-1] - self.s  # (N-2,) distance to each corner
        mask = ahead > -0.1
        if mask.any():
            caps = np.sqrt(
                self.corner_speed[mask] ** 2 + 2 * self.brake * np.maximum(ahead[mask], 0.0)
            )
            speed = min(speed, float(caps.min()))
        # Gaze.
        settling = seg.final is not None and rem < FINAL_BLEND
        if settling:  # step into place while turning to the final orientation
            yaw, pitch = seg.final
            speed = min(speed, SETTLE_SPEED)
        elif seg.look_point is not None and not self.released:
            yaw, pitch = heading_pitch(np.asarray(seg.look_point) - st.p)
            # Look ahead again once the point is behind the direction of motion.
            if norm > 1e-6 and abs(wrap(yaw - math.atan2(direction[1], direction[0]))) > (
                LOOK_RELEASE
            ):
                self.released = True
                self.gaze = (yaw, pitch)
        elif seg.gaze_fixed is not None:
            yaw, pitch = seg.gaze_fixed
        else:
            if norm > 1e-6 and rem > MOTION_GAZE_MIN:
                self.gaze = (math.atan2(direction[1], direction[0]), seg.pitch)
            yaw, pitch = self.gaze
        # Forward-dominant walking: slow down while not facing the direction of motion.
        if norm > 1e-6 and not settling:
            facing = math.cos(math.atan2(direction[1], direction[0]) - st.yaw)
            speed *= min(max(seg.sideways + (1 - seg.sideways) * facing, 0.15), 1.0)
        arrived = rem < ARRIVE_DIST and math.hypot(*st.v[:2]) < ARRIVE_SPEED
        if arrived and seg.final is not None:
            arrived = (
                abs(wrap(seg.final[0] - st.yaw)) < ARRIVE_ANGLE
                and abs(seg.final[1] - st.pitch) < ARRIVE_ANGLE
                and abs(st.yaw_rate) < SETTLE_RATE
            )
        if arrived:
            self.done = True
        return Command(direction * speed, seg.z, yaw, pitch)
