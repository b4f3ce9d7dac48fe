"""FreeSpace: exact collision checks, clearance, sampling and A* planning through doorways."""

import numpy as np
import pytest

from reverie.worlds import DoorSpec, ObjectSpec, RoomSpec, SceneSpec, TextureSpec, sample_scene
from reverie.worlds.freespace import FreeSpace

R_CAM = 0.3
TEX = TextureSpec("checker", (0.8, 0.8, 0.8), (0.2, 0.2, 0.2))


def _room(x0, y0, x1, y1, doors=(), height=3.0):
    return RoomSpec(x0, y0, x1, y1, height, TEX, TEX, (TEX,) * 4, doors=tuple(doors))


def _cylinder(x, y, radius):
    return ObjectSpec("cylinder", (x, y, 0.5), (radius, 0.5, 0.0), 0.0, (1.0, 0.0, 0.0, 1.0))


def _indoor(rooms, objects=(), camera_z=(1.0, 1.8)):
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
        objects=tuple(objects),
        landmarks=(),
        ground=None,
        sky=((0, 0, 0), (0, 0, 0)),
        lights=(),
        camera_bounds=bounds,
        camera_z=camera_z,
    )


def _two_rooms(objects=(), height=3.0):
    """Rooms [0,4]x[0,4] and [4,8]x[0,4] joined by a 1.5 m door centred at y = 2."""
    a = _room(0, 0, 4, 4, [DoorSpec("east", 2.0, 1.5, 2.3)], height)
    b = _room(4, 0, 8, 4, [DoorSpec("west", 2.0, 1.5, 2.3)], height)
    return _indoor([a, b], objects)


def _walkable(spec, q):
    """Independent check: q (N, 2) inside a room and not inside a wall (door gaps excluded)."""
    ok = np.zeros(len(q), dtype=bool)
    for room in spec.rooms:
        t = room.wall_thickness
        inside = (
            (q[:, 0] >= room.x0)
            & (q[:, 0] <= room.x1)
            & (q[:, 1] >= room.y0)
            & (q[:, 1] <= room.y1)
        )
        across = {
            "west": q[:, 0] - room.x0,
            "east": room.x1 - q[:, 0],
            "south": q[:, 1] - room.y0,
            "north": room.y1 - q[:, 1],
        }
        in_wall = np.zeros(len(q), dtype=bool)
        for side, depth in across.items():
            along = q[:, 1] if side in ("west", "east") else q[:, 0]
            gap = np.zeros(len(q), dtype=bool)
            for d in room.doors:
                if d.side == side:
                    gap |= np.abs(along - d.center) < d.width / 2
            in_wall |= (depth <= t) & ~gap
        ok |= inside & ~in_wall
    return ok


def _disc_free(spec, xy, r=R_CAM, n=64):
    """The camera disc (centre + n boundary points) lies in walkable space, outside objects."""
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], -1) * (r - 1e-6)  # (n, 2)
    pts = xy[:, None] + np.concatenate([np.zeros((1, 2)), ring])  # (N, n + 1, 2)
    ok = _walkable(spec, pts.reshape(-1, 2)).reshape(len(xy), -1).all(axis=1)
    for o in spec.objects:
        ok &= np.hypot(*(xy - o.pos[:2]).T) >= o.footprint_radius() + r
    return ok


def test_indoor_walls_doors_height_and_rooms():
    fs = FreeSpace.from_scene(_two_rooms(), camera_radius=R_CAM)
    free = fs.is_free(
        np.array(
            [
                [2.0, 2.0],
                [0.35, 2.0],
                [0.41, 2.0],
                [4.0, 2.0],
                [4.0, 0.9],
                [4.0, 2.44],
                [4.0, 2.46],
                [3.0, 3.55],
                [3.0, 3.65],
            ]
        )
    )
    np.testing.assert_array_equal(free, [1, 0, 1, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(fs.is_free([[2, 2, 1.5], [2, 2, 0.9], [2, 2, 1.9]]), [1, 0, 0])
    np.testing.assert_array_equal(fs.room_of([[2, 2], [6, 2], [9, 9]]), [0, 1, -1])
    # Clearance = distance the centre can move: the nearest wall face is 1.9 m from the centre.
    np.testing.assert_allclose(fs.clearance([2.0, 2.0]), 1.9 - R_CAM, atol=1e-12)
    assert fs.clearance([0.2, 2.0]) == 0.0
    c, grad = fs.clearance_gradient(np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(grad[0], [1.0, 0.0], atol=1e-6)  # away from the west wall
    assert fs.z_range == (1.0, 1.8)


def test_open_scene_matches_brute_force():
    spec = sample_scene(3, "open")
    fs = FreeSpace.from_scene(spec, camera_radius=R_CAM)
    x0, y0, x1, y1 = spec.camera_bounds
    xy = np.random.default_rng(0).uniform([x0 - 1, y0 - 1], [x1 + 1, y1 + 1], size=(5000, 2))
    expect = (
        (xy[:, 0] >= x0 + R_CAM)
        & (xy[:, 0] <= x1 - R_CAM)
        & (xy[:, 1] >= y0 + R_CAM)
        & (xy[:, 1] <= y1 - R_CAM)
    )
    for o in spec.objects:
        expect &= np.hypot(*(xy - o.pos[:2]).T) >= o.footprint_radius() + R_CAM
    np.testing.assert_array_equal(fs.is_free(xy), expect)
    assert fs.room_of(xy).max() == -1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_indoor_is_free_matches_disc_sampling(seed):
    spec = sample_scene(seed, "indoor")
    fs = FreeSpace.from_scene(spec, camera_radius=R_CAM)
    x0, y0, x1, y1 = spec.camera_bounds
    xy = np.random.default_rng(seed).uniform([x0, y0], [x1, y1], size=(3000, 2))
    got, expect = fs.is_free(xy), _disc_free(spec, xy)
    near_boundary = np.abs(fs._signed_clearance(xy)) < 1e-2  # disc sampling is approximate
    assert np.all((got == expect) | near_boundary)
    assert got.any() and (~got).any()


def test_grid_is_exact_at_cell_centres():
    fs = FreeSpace.from_scene(sample_scene(4, "indoor"), camera_radius=R_CAM, resolution=0.1)
    xy = np.stack(np.meshgrid(fs.xs, fs.ys), -1)  # (ny, nx, 2)
    np.testing.assert_array_equal(fs.is_free(xy), fs.free_grid)
    assert fs.labels[fs.free_grid].min() >= 1 and fs.labels[~fs.free_grid].max() == 0


def _assert_path_free(fs, path, step=0.01):
    for a, b in zip(path[:-1], path[1:], strict=True):
        n = int(np.ceil(np.linalg.norm(b - a) / step)) + 1
        assert fs.is_free(np.linspace(a, b, n)).all()


def test_shortest_path_goes_through_the_door():
    fs = FreeSpace.from_scene(_two_rooms(), camera_radius=R_CAM)
    a, b = np.array([1.0, 0.8]), np.array([7.0, 0.8])  # the straight line hits the wall
    path = fs.shortest_path(a, b)
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    assert 3 <= len(path) <= 6  # a few straight segments after shortcutting
    _assert_path_free(fs, path)
    # Where the path crosses the shared wall (x = 4) it is inside the door gap.
    k = np.nonzero(np.diff(np.sign(path[:, 0] - 4.0)))[0][0]
    (xa, ya), (xb, yb) = path[k], path[k + 1]
    y_cross = ya + (4.0 - xa) * (yb - ya) / (xb - xa)
    assert abs(y_cross - 2.0) <= 0.75 - R_CAM
    # Shortcut segments keep the margin where the scene allows it (the door leaves 0.45 m).
    margin = min(fs.segment_clearance(p, q) for p, q in zip(path[:-1], path[1:], strict=True))
    assert margin >= 0.1 - 1e-9
    # In the open, the path is the straight segment.
    assert len(fs.shortest_path([1.0, 1.0], [3.0, 3.0])) == 2


def test_shortest_path_in_sampled_multi_room_scenes():
    checked = 0
    for seed in range(30):
        spec = sample_scene(seed, "indoor")
        if len(spec.rooms) < 3:
            continue
        fs = FreeSpace.from_scene(spec, camera_radius=R_CAM)
        rng = np.random.default_rng(seed)
        a = fs.sample_free(rng, 0.2)
        for _ in range(3):
            b = fs.sample_free(rng, 0.2, connected_to=a)
            path = fs.shortest_path(a, b)
            _assert_path_free(fs, path, step=0.02)
            rooms = set(fs.room_of(np.linspace(path[:-1], path[1:], 20).reshape(-1, 2)))
            checked += len(rooms - {-1}) > 1
        if checked >= 4:
            break
    assert checked >= 4  # paths that actually went from room to room


def test_errors():
    blocked = _two_rooms(objects=[_cylinder(4.0, 2.0, 0.7)])
    fs = FreeSpace.from_scene(blocked, camera_radius=R_CAM)
    with pytest.raises(ValueError, match="no collision-free path"):
        fs.shortest_path([1.0, 1.0], [7.0, 1.0])
    with pytest.raises(ValueError, match="not in free space"):
        fs.shortest_path([0.1, 1.0], [2.0, 2.0])
    with pytest.raises(ValueError, match="clearance"):
        fs.sample_free(np.random.default_rng(0), min_clearance=5.0)
    with pytest.raises(ValueError, match="height range"):
        FreeSpace.from_scene(_two_rooms(height=1.2), camera_radius=R_CAM)
    with pytest.raises(ValueError, match="shape"):
        fs.is_free(np.zeros((3, 4)))


def test_sample_free_is_seeded_free_and_connected():
    fs = FreeSpace.from_scene(_two_rooms(objects=[_cylinder(4.0, 2.0, 0.7)]), R_CAM)
    a = fs.sample_free(np.random.default_rng(1), 0.2)
    np.testing.assert_array_equal(a, fs.sample_free(np.random.default_rng(1), 0.2))
    rng = np.random.default_rng(2)
    pts = np.stack([fs.sample_free(rng, 0.2, connected_to=[1.0, 1.0]) for _ in range(50)])
    assert (fs.clearance(pts) >= 0.2).all()
    assert (fs.room_of(pts) == 0).all()  # the door is blocked: only room 0 is reachable
