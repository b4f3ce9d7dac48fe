"""Procedural scenes: determinism, JSON round trip, content rules, rendering and camera model."""

import dataclasses

import numpy as np
import pytest

from reverie.camera.rotations import look_at
from reverie.worlds import ObjectSpec, SceneSpec, sample_scene
from reverie.worlds.caption import scene_caption
from reverie.worlds.render import SceneRenderer, intrinsics, render_start_frame
from reverie.worlds.spec import TextureSpec
from reverie.worlds.textures import texture_image

SEEDS = range(40)


def test_same_seed_same_scene_and_different_seeds_differ():
    assert sample_scene(7) == sample_scene(7)
    assert sample_scene(7, "open") == sample_scene(7, "open")
    assert sample_scene(7) != sample_scene(8)


@pytest.mark.parametrize("kind", ["indoor", "open", "mixed"])
def test_json_round_trip(kind):
    for seed in range(10):
        spec = sample_scene(seed, kind)
        assert SceneSpec.from_json(spec.to_json()) == spec


def test_from_dict_rejects_unknown_missing_and_mistyped_fields():
    d = sample_scene(0).to_dict()
    with pytest.raises(ValueError, match="unknown field"):
        SceneSpec.from_dict({**d, "colour": 1})
    missing = dict(d)
    missing.pop("objects")
    with pytest.raises(ValueError, match="objects"):
        SceneSpec.from_dict(missing)
    with pytest.raises(ValueError, match="number"):
        SceneSpec.from_dict({**d, "fovy": "wide"})
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneSpec.from_json("{nope")
    with pytest.raises(ValueError, match="version"):
        SceneSpec.from_dict({**d, "version": 99})


def test_bad_arguments_and_textures():
    with pytest.raises(ValueError, match="seed"):
        sample_scene(-1)
    with pytest.raises(ValueError, match="kind"):
        sample_scene(0, "underwater")
    with pytest.raises(ValueError, match="pattern"):
        TextureSpec("plaid", (1, 1, 1), (0, 0, 0))
    with pytest.raises(ValueError, match="photo"):
        TextureSpec("photo", (1, 1, 1), (0, 0, 0), photo="not_an_image")


def test_scene_content_rules():
    kinds = set()
    for seed in SEEDS:
        spec = sample_scene(seed)
        kinds.add(spec.kind)
        assert 5 <= len(spec.objects) <= 20, seed
        x0, y0, x1, y1 = spec.camera_bounds
        for o in spec.objects:  # objects stand inside the camera's region
            assert x0 <= o.pos[0] <= x1 and y0 <= o.pos[1] <= y1
        for a, b in [(a, b) for i, a in enumerate(spec.objects) for b in spec.objects[i + 1 :]]:
            gap = np.hypot(a.pos[0] - b.pos[0], a.pos[1] - b.pos[1])
            assert gap > a.footprint_radius() + b.footprint_radius(), seed  # no overlaps
        if spec.kind == "indoor":
            assert 1 <= len(spec.rooms) <= 3
            for room in spec.rooms:  # distinct surfaces within a room
                assert room.floor != room.ceiling
            if len(spec.rooms) > 1:
                assert all(room.doors for room in spec.rooms)  # every room is reachable
        else:
            # Content in every direction: landmarks surround the region in all four quadrants.
            angles = [np.arctan2(o.pos[1], o.pos[0]) for o in spec.landmarks]
            quadrants = {int((a + np.pi) // (np.pi / 2)) % 4 for a in angles}
            assert quadrants == {0, 1, 2, 3}
    assert kinds == {"indoor", "open"}


def test_textures_mix_photos_and_patterns():
    photos, patterns = set(), set()
    for seed in SEEDS:
        spec = sample_scene(seed)
        texs = [r.floor for r in spec.rooms] + [w for r in spec.rooms for w in r.walls]
        texs += [o.texture for o in spec.objects if o.texture] + (
            [spec.ground] if spec.ground else []
        )
        photos |= {t.photo for t in texs if t.pattern == "photo"}
        patterns |= {t.pattern for t in texs if t.pattern != "photo"}
        photos |= {p.photo for r in spec.rooms for p in r.posters}
    assert {"brick", "grass", "gravel"} & photos and len(photos) >= 8
    assert len(patterns) >= 6
    img = texture_image(TextureSpec("photo", (1, 0, 0), (0, 0, 0), photo="brick"))
    assert img.dtype == np.uint8 and img.shape[-1] == 3
    assert img[..., 1:].max() == 0  # grayscale photos are tinted with the spec colours


def test_every_photo_loads():
    from reverie.worlds.spec import MATERIAL_PHOTOS, PHOTO_NAMES
    from reverie.worlds.textures import load_photo

    for name in PHOTO_NAMES + MATERIAL_PHOTOS:
        img = load_photo(name)
        assert img.ndim == 3 and img.shape[-1] == 3 and 0 <= img.min() <= img.max() <= 1, name


def test_caption_describes_content_not_motion():
    for seed in range(10):
        spec = sample_scene(seed)
        text = scene_caption(spec)
        assert ("indoor" in text) == (spec.kind == "indoor")
        for word in ("pan", "dolly", "moves", "camera", "turn"):
            assert word not in text.lower().split()
        assert all(o.shape in text or o.name in text for o in spec.objects)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_render_resolutions_and_depth(resolution):
    spec = sample_scene(3)
    room = spec.rooms[0] if spec.rooms else None
    P = np.array([(room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2, 1.5]) if room else np.zeros(3)
    with SceneRenderer(spec, resolution, resolution) as r:
        rgb = r.render(look_at(np.array([1.0, 0.2, 0.0])), P)
        depth = r.render_depth(look_at(np.array([1.0, 0.2, 0.0])), P)
    assert rgb.shape == (resolution, resolution, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 5  # textured content, not a blank frame
    assert depth.shape == (resolution, resolution) and np.isfinite(depth).all()
    assert 0.03 < depth.min() and depth.max() < 50


def test_projection_matches_intrinsics_and_pose_convention():
    """A small sphere lands on the pixel that K [R | -R P] predicts (OpenCV convention)."""
    base = sample_scene(0, "open")
    X = np.array([4.0, 1.0, 2.2])
    ball = ObjectSpec("sphere", tuple(X), (0.12, 0.0, 0.0), 0.0, (1.0, 0.0, 0.0, 1.0), name="ball")
    P = np.array([0.0, 0.0, 1.5])
    R = look_at(np.array([1.0, -0.1, 0.05]))
    size = 128
    with_ball = dataclasses.replace(base, objects=(ball,), landmarks=())
    without = dataclasses.replace(base, objects=(), landmarks=())
    with SceneRenderer(with_ball, size, size) as r:
        a = r.render(R, P).astype(float)
        K = r.K
    with SceneRenderer(without, size, size) as r:
        b = r.render(R, P).astype(float)
    mask = np.abs(a - b).sum(-1) > 30
    assert mask.sum() > 5
    vs, us = np.nonzero(mask)
    uv_obs = np.array([us.mean() + 0.5, vs.mean() + 0.5])  # pixel centres at half integers
    x_cam = R @ (X - P)
    uv = (K @ (x_cam / x_cam[2]))[:2]
    assert np.allclose(uv_obs, uv, atol=1.0), (uv_obs, uv)
    assert np.allclose(K, intrinsics(size, size, base.fovy))


def test_depth_is_metric_distance_along_the_optical_axis():
    spec = dataclasses.replace(sample_scene(2, "indoor"), objects=())
    room = spec.rooms[0]
    P = np.array([(room.x0 + room.x1) / 2, (room.y0 + room.y1) / 2, 1.5])
    t = room.wall_thickness
    views = {  # side -> (optical axis, distance from P to that wall's inner face)
        "west": (np.array([-1.0, 0, 0]), P[0] - room.x0 - t),
        "east": (np.array([1.0, 0, 0]), room.x1 - t - P[0]),
        "south": (np.array([0, -1.0, 0]), P[1] - room.y0 - t),
        "north": (np.array([0, 1.0, 0]), room.y1 - t - P[1]),
    }
    solid = [s for s in views if not any(d.side == s for d in room.doors)]
    assert solid
    with SceneRenderer(spec, 64, 64) as r:
        for side in solid:
            axis, expected = views[side]
            depth = r.render_depth(look_at(axis), P)
            # Depth is along the optical axis, so a wall facing the camera is flat in depth.
            assert abs(np.median(depth[24:40, 24:40]) - expected) < 0.02, side
            assert np.ptp(depth[24:40, 24:40]) < 0.05
        assert r.render(look_at(views[solid[0]][0]), P).std() > 1


def test_start_frame_is_the_view_from_the_first_pose():
    from reverie.worlds.trajectory import sample_trajectory

    spec = sample_scene(3)
    path = sample_trajectory(spec, "revisit", seconds=0.5, fps=16, seed=3)
    frame = render_start_frame(spec, path.R, path.P, 32)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and frame.std() > 1.0
    with SceneRenderer(spec, 32, 32) as r:
        np.testing.assert_array_equal(frame, r.render_trajectory(path.R, path.P)[0][0])
    with pytest.raises(ValueError, match="NaN"):
        render_start_frame(spec, path.R, np.full_like(path.P, np.nan), 32)
