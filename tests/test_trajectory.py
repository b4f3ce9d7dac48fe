"""Camera trajectories: determinism, collision constraints, motion limits, revisit behaviour."""

import functools

import numpy as np
import pytest

from reverie.camera import yaw_pitch_roll_from_R
from reverie.worlds import DoorSpec, RoomSpec, SceneSpec, TextureSpec, sample_scene
from reverie.worlds.freespace import FreeSpace
from reverie.worlds.revisit import revisit_stats
from reverie.worlds.trajectory import CameraTrajectory, TrajectoryConfig, sample_trajectory

CFG = TrajectoryConfig()
FAMILIES = ("revisit", "random", "mixed")
TOL = 1e-6  # relative slack on the limits (they are enforced exactly, up to rounding)
TEX = TextureSpec("checker", (0.8, 0.8, 0.8), (0.2, 0.2, 0.2))


@functools.cache
def _scene(seed: int, kind: str) -> SceneSpec:
    return sample_scene(seed, kind)


@functools.cache
def _traj(seed: int, kind: str, family: str, seconds: float) -> CameraTrajectory:
    return sample_trajectory(_scene(seed, kind), family, seconds=seconds, seed=seed)


def _room(x0, y0, x1, y1, doors=()):
    return RoomSpec(x0, y0, x1, y1, 3.0, TEX, TEX, (TEX,) * 4, doors=tuple(doors))


def _indoor(rooms):
    bounds = (
        min(r.x0 for r in rooms),
        min(r.y0 for r in rooms),
        max(r.x1 for r in rooms),
        max(r.y1 for r in rooms),
    )
    return SceneSpec(
        seed=0,
        kind="indoor",
        rooms=tuple(rooms),
        objects=(),
        landmarks=(),
        ground=None,
        sky=((0, 0, 0), (0, 0, 0)),
        lights=(),
        camera_bounds=bounds,
        camera_z=(1.0, 1.8),
    )


def _assert_geometrically_free(spec: SceneSpec, P: np.ndarray, r: float) -> None:
    """Check camera centres against the spec itself (not through FreeSpace)."""
    x0, y0, x1, y1 = spec.camera_bounds
    assert (P[:, 0] >= x0).all() and (P[:, 0] <= x1).all()
    assert (P[:, 1] >= y0).all() and (P[:, 1] <= y1).all()
    assert (P[:, 2] >= spec.camera_z[0]).all() and (P[:, 2] <= spec.camera_z[1]).all()
    for o in spec.objects:  # outside every footprint inflated by the camera radius
        assert (np.hypot(*(P[:, :2] - o.pos[:2]).T) >= o.footprint_radius() + r - 1e-9).all()
    if spec.kind == "indoor":  # inside a room, off the inner wall faces unless in a doorway
        ok = np.zeros(len(P), dtype=bool)
        for room in spec.rooms:
            m = room.wall_thickness + r
            inner = (
                (P[:, 0] >= room.x0 + m)
                & (P[:, 0] <= room.x1 - m)
                & (P[:, 1] >= room.y0 + m)
                & (P[:, 1] <= room.y1 - m)
            )
            for d in room.doors:
                along = P[:, 1] if d.side in ("east", "west") else P[:, 0]
                wall = {"west": room.x0, "east": room.x1, "south": room.y0, "north": room.y1}
                across = P[:, 0] if d.side in ("east", "west") else P[:, 1]
                inner |= (np.abs(along - d.center) <= d.width / 2 - r + 1e-9) & (
                    np.abs(across - wall[d.side]) <= m
                )
            ok |= inner
        # The doorway test above is a sufficient box; points between it and the room interior
        # (near the door jambs) must still be free in the exact check.
        jamb = ~ok
        if jamb.any():
            fs = FreeSpace.from_scene(spec, r, CFG.grid_resolution)
            assert fs.is_free(P[jamb]).all()


def _assert_limits(tr: CameraTrajectory, cfg: TrajectoryConfig = CFG) -> None:
    R, P, fps = tr.R, tr.P, tr.fps
    assert R.dtype == np.float64 and P.dtype == np.float64
    np.testing.assert_allclose(
        R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-10
    )
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-10)
    v = np.diff(P, axis=0) * fps  # (T-1, 3) m/s
    a = np.diff(P, 2, axis=0) * fps**2  # (T-2, 3) m/s^2
    assert np.linalg.norm(v[:, :2], axis=1).max(initial=0) <= cfg.max_speed * (1 + TOL)
    assert np.abs(v[:, 2]).max(initial=0) <= cfg.max_vertical_speed * (1 + TOL)
    assert np.linalg.norm(a, axis=1).max(initial=0) <= cfg.max_accel * (1 + TOL)
    yaw, pitch, roll = (np.degrees(x) for x in yaw_pitch_roll_from_R(R))
    yaw = np.degrees(np.unwrap(np.radians(yaw)))
    assert np.abs(np.diff(yaw)).max(initial=0) * fps <= cfg.max_yaw_rate * (1 + TOL)
    assert np.abs(np.diff(yaw, 2)).max(initial=0) * fps**2 <= cfg.max_yaw_accel * (1 + TOL)
    assert np.abs(pitch).max() <= cfg.max_pitch * (1 + TOL)
    assert np.abs(np.diff(pitch)).max(initial=0) * fps <= cfg.max_pitch_rate * (1 + TOL)
    assert np.abs(np.diff(pitch, 2)).max(initial=0) * fps**2 <= cfg.max_pitch_accel * (1 + TOL)
    assert np.abs(roll).max() <= cfg.max_roll * (1 + TOL)
    assert np.abs(np.diff(roll)).max(initial=0) * fps < 10.0  # smooth roll, deg/s


def test_same_seed_same_trajectory_different_seed_different():
    spec = _scene(1, "indoor")
    a = sample_trajectory(spec, "mixed", seconds=4, seed=7)
    b = sample_trajectory(spec, "mixed", seconds=4, seed=7)
    c = sample_trajectory(spec, "mixed", seconds=4, seed=8)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.P, b.P)
    assert not np.array_equal(a.P, c.P)
    assert a.R.shape == (64, 3, 3) and a.P.shape == (64, 3) and a.fps == 16
    assert a.family == "mixed" and len(a) == 64 and a.seconds == 4.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["indoor", "open"])
def test_collision_free_and_within_limits(family, kind):
    for seed in range(4):
        tr = _traj(seed, kind, family, 12.0)
        assert tr.collision_stops == 0
        spec = _scene(seed, kind)
        fs = FreeSpace.from_scene(spec, CFG.camera_radius, CFG.grid_resolution)
        assert fs.is_free(tr.P).all()
        assert fs.is_free(0.5 * (tr.P[1:] + tr.P[:-1])).all()  # no tunnelling between frames
        _assert_geometrically_free(spec, tr.P, CFG.camera_radius)
        _assert_limits(tr)


def test_motion_is_human_like():
    """Mostly forward motion, but also some trucking, pedestal, tilt and pauses."""
    fwd = side = vert = tilt = paused = 0.0
    for seed in range(4):
        tr = _traj(seed, "indoor", "random", 20.0)
        d = np.einsum("tij,tj->ti", tr.R[:-1], np.diff(tr.P, axis=0))  # camera frame (x, y, z)
        fwd += np.abs(d[:, 2]).sum()
        side += np.abs(d[:, 0]).sum()
        vert += np.abs(np.diff(tr.P[:, 2])).sum()
        pitch = yaw_pitch_roll_from_R(tr.R)[1]
        tilt += np.degrees(np.abs(np.diff(pitch))).sum()
        paused += (np.linalg.norm(d, axis=1) * tr.fps < 0.05).mean()
    assert fwd > 2 * side > 0  # forward-dominant, with some trucking
    assert vert > 0.1 and tilt > 10.0 and paused > 0.1


def test_revisit_family_revisits_more_than_random():
    fractions = {}
    for family in ("revisit", "random"):
        stats = [
            revisit_stats(t.R, t.P, t.fps)
            for t in (
                _traj(seed, "indoor" if seed % 4 else "open", family, 20.0) for seed in range(10)
            )
        ]
        fractions[family] = np.mean([s.revisit_fraction for s in stats])
    assert fractions["revisit"] >= 0.1
    assert fractions["revisit"] >= 3 * fractions["random"]


def test_revisit_family_returns_through_doorways():
    spec = _indoor(
        [
            _room(0, 0, 4, 4, [DoorSpec("east", 2.0, 1.5, 2.3)]),
            _room(4, 0, 8, 4, [DoorSpec("west", 2.0, 1.5, 2.3)]),
        ]
    )
    fs = FreeSpace.from_scene(spec, CFG.camera_radius, CFG.grid_resolution)
    both_rooms = 0
    for seed in range(3):
        tr = sample_trajectory(spec, "revisit", seconds=30, seed=seed)
        _assert_limits(tr)
        assert fs.is_free(tr.P).all()
        both_rooms += len(set(fs.room_of(tr.P[:, :2]).tolist())) == 2
        labels = [s.label for s in tr.segments]
        assert "turn_back" in labels or "return" in labels
        times = np.array([(s.t_start, s.t_end) for s in tr.segments])
        assert (np.diff(times, axis=1) >= 0).all() and (times[1:, 0] == times[:-1, 1]).all()
    assert both_rooms >= 1


def test_tiny_scene_and_short_durations():
    tiny = _indoor([_room(0, 0, 1.6, 1.6)])  # free square of 0.8 m side
    for family in FAMILIES:
        tr = sample_trajectory(tiny, family, seconds=6, seed=1)
        _assert_geometrically_free(tiny, tr.P, CFG.camera_radius)
        _assert_limits(tr)
    assert len(sample_trajectory(tiny, "revisit", seconds=1, seed=0)) == 16
    assert len(sample_trajectory(_scene(0, "open"), "random", seconds=0.01, seed=0)) == 1


def test_errors():
    spec = _scene(0, "indoor")
    with pytest.raises(ValueError, match="family"):
        sample_trajectory(spec, "teleport", seconds=1, seed=0)
    with pytest.raises(ValueError, match="seconds"):
        sample_trajectory(spec, "random", seconds=0, seed=0)
    with pytest.raises(ValueError, match="no free space"):
        sample_trajectory(_indoor([_room(0, 0, 0.7, 0.7)]), "random", seconds=1, seed=0)
    with pytest.raises(ValueError, match="cruise_speed"):
        TrajectoryConfig(cruise_speed=(0.5, 2.0))
