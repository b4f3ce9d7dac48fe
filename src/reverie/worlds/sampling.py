"""Deterministic sampling of procedural scenes from a seed.

``sample_scene(seed, kind)`` returns the same :class:`SceneSpec` for the same arguments on every
machine (it only uses ``numpy.random.Generator`` draws in a fixed order).

Indoor scenes are one to three axis-aligned rooms on a 2x2 grid of cells, connected by doorways
along a random spanning tree, each with its own wall/floor/ceiling textures and posters. Open
scenes are a textured ground under a gradient sky with landmarks scattered inside the camera's
region and a ring of distant landmarks around it, so that every viewing direction shows content.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from reverie.worlds.spec import (
    MATERIAL_PHOTOS,
    PHOTO_NAMES,
    SIDES,
    TEXTURE_PATTERNS,
    DoorSpec,
    LightSpec,
    ObjectSpec,
    PosterSpec,
    RoomSpec,
    SceneSpec,
    TextureSpec,
)

SceneKind = Literal["indoor", "open", "mixed"]

SHAPES = ("box", "sphere", "cylinder", "capsule", "ellipsoid")
OBJECT_COUNT = (5, 20)
"""Inclusive range of the number of objects in the camera's region."""
CAMERA_Z = (1.0, 1.8)
"""Camera height range above the floor (metres): eye height give or take."""
DOOR_HEIGHT = 2.3
WALL_CLEARANCE = 0.6
"""Objects keep at least this distance (metres) from walls, so the camera can pass."""
DOOR_CLEARANCE = 1.2
"""Objects keep at least this distance (metres) from door centres."""


def _color(rng: np.random.Generator, lo: float = 0.1, hi: float = 0.95) -> tuple[float, ...]:
    return tuple(float(c) for c in rng.uniform(lo, hi, size=3).round(3))


def _texture(rng: np.random.Generator, surface: str) -> TextureSpec:
    """A random texture suited to ``surface`` ("wall", "floor", "ceiling", "ground", "object")."""
    use_photo = (
        rng.random()
        < {"wall": 0.3, "floor": 0.35, "ceiling": 0.1, "ground": 0.6, "object": 0.15}[surface]
    )
    c1, c2 = _color(rng, 0.45, 0.95), _color(rng, 0.05, 0.5)
    seed = int(rng.integers(0, 2**31 - 1))
    repeat = float(round(rng.uniform(0.3, 1.2), 3))
    if use_photo:
        photo = {"ground": ("grass", "gravel"), "floor": ("gravel", "brick")}.get(
            surface, MATERIAL_PHOTOS
        )
        return TextureSpec(
            "photo", c1, c2, photo=str(rng.choice(photo)), repeat=repeat * 0.5, seed=seed
        )
    patterns = {
        "ceiling": ("tiles", "noise", "gradient", "dots"),
        "floor": ("checker", "planks", "tiles", "noise"),
        "ground": ("noise", "checker", "tiles"),
    }.get(surface, TEXTURE_PATTERNS)
    return TextureSpec(str(rng.choice(patterns)), c1, c2, repeat=repeat, seed=seed)


def _object(rng: np.random.Generator, xy: tuple[float, float], max_half: float) -> ObjectSpec:
    shape = str(rng.choice(SHAPES))
    s = rng.uniform(0.1, max(max_half, 0.12), size=3)
    if shape == "sphere":
        size = (s[0], 0.0, 0.0)
        z = s[0] if rng.random() < 0.6 else float(rng.uniform(s[0], 2.0))
    elif shape in ("cylinder", "capsule"):
        size = (min(s[0], 0.45), s[1] * 1.5, 0.0)
        z = size[1] + (size[0] if shape == "capsule" else 0.0)
    else:
        size = (s[0], s[1], s[2] * 1.3)
        z = size[2]
    tex = _texture(rng, "object") if rng.random() < 0.5 else None
    rgba = (*_color(rng), 1.0)
    size3 = tuple(float(round(v, 3)) for v in size)
    return ObjectSpec(
        shape=shape,
        pos=(round(xy[0], 3), round(xy[1], 3), round(float(z), 3)),
        size=size3,
        yaw=float(round(rng.uniform(0, 360), 1)),
        rgba=rgba,
        texture=tex,
        specular=float(round(rng.uniform(0, 0.8), 2)),
        shininess=float(round(rng.uniform(0, 0.8), 2)),
        name=shape,
    )


def _scatter(
    rng: np.random.Generator,
    n: int,
    regions: list[tuple[float, float, float, float]],
    avoid: list[tuple[float, float, float]],
    max_half: float,
) -> list[ObjectSpec]:
    """Place ``n`` objects in rectangles ``regions`` without overlaps or blocking ``avoid`` discs.

    Objects keep a walkable gap between each other; when the rooms are crowded, later attempts
    use smaller objects and a narrower (still passable) gap so at least ``OBJECT_COUNT[0]``
    objects fit.
    """
    for shrink in (1.0, 0.6, 0.4, 0.3):  # crowded rooms: start over with smaller objects
        placed: list[ObjectSpec] = []
        discs = list(avoid)
        for gap, half in ((0.9, max_half * shrink), (0.6, max_half * shrink * 0.6)):
            for _ in range(n * 30):
                if len(placed) == n:
                    return placed
                x0, y0, x1, y1 = regions[int(rng.integers(len(regions)))]
                xy = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
                obj = _object(rng, xy, half)
                r = obj.footprint_radius()
                if not (x0 + r <= xy[0] <= x1 - r and y0 + r <= xy[1] <= y1 - r):
                    continue
                if any(np.hypot(xy[0] - cx, xy[1] - cy) < r + cr for cx, cy, cr in discs):
                    continue
                placed.append(obj)
                discs.append((xy[0], xy[1], r + gap))
        if len(placed) >= OBJECT_COUNT[0]:
            break
    return placed


def _indoor(rng: np.random.Generator, seed: int) -> SceneSpec:
    widths = rng.uniform(4.0, 7.0, size=2).round(2)
    depths = rng.uniform(4.0, 7.0, size=2).round(2)
    xs, ys = np.concatenate([[0.0], np.cumsum(widths)]), np.concatenate([[0.0], np.cumsum(depths)])
    n_rooms = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    cells = [(0, 0)]
    edges: list[tuple[tuple[int, int], tuple[int, int]]] = []
    while len(cells) < n_rooms:  # grow a random spanning tree over the 2x2 grid
        frontier = [
            (c, (c[0] + dx, c[1] + dy))
            for c in cells
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= c[0] + dx < 2 and 0 <= c[1] + dy < 2 and (c[0] + dx, c[1] + dy) not in cells
        ]
        a, b = frontier[int(rng.integers(len(frontier)))]
        cells.append(b)
        edges.append((a, b))
    height = float(round(rng.uniform(2.7, 3.4), 2))
    doors: dict[tuple[int, int], list[DoorSpec]] = {c: [] for c in cells}
    for a, b in edges:
        width = float(round(rng.uniform(1.3, 1.8), 2))
        if a[1] == b[1]:  # neighbours along x: shared wall at constant x
            lo, hi = ys[a[1]], ys[a[1] + 1]
            side_a, side_b = ("east", "west") if b[0] > a[0] else ("west", "east")
        else:
            lo, hi = xs[a[0]], xs[a[0] + 1]
            side_a, side_b = ("north", "south") if b[1] > a[1] else ("south", "north")
        center = float(round(rng.uniform(lo + 0.7 + width / 2, hi - 0.7 - width / 2), 2))
        doors[a].append(DoorSpec(side_a, center, width, DOOR_HEIGHT))
        doors[b].append(DoorSpec(side_b, center, width, DOOR_HEIGHT))

    rooms, regions, avoid, lights = [], [], [], []
    for k, (i, j) in enumerate(cells):
        x0, x1, y0, y1 = float(xs[i]), float(xs[i + 1]), float(ys[j]), float(ys[j + 1])
        walls = tuple(_texture(rng, "wall") for _ in SIDES)
        posters = []
        for _ in range(int(rng.integers(1, 4))):
            side = str(rng.choice(SIDES))
            lo, hi = (x0, x1) if side in ("south", "north") else (y0, y1)
            w = float(round(rng.uniform(0.8, 1.6), 2))
            h = float(round(w * rng.uniform(0.6, 1.1), 2))
            c = float(round(rng.uniform(lo + 0.3 + w / 2, hi - 0.3 - w / 2), 2))
            blocked = any(
                d.side == side and abs(d.center - c) < (d.width + w) / 2 + 0.1
                for d in doors[(i, j)]
            )
            overlaps = any(
                p.side == side and abs(p.center[0] - c) < (p.size[0] + w) / 2 + 0.1 for p in posters
            )
            if blocked or overlaps:
                continue
            z = float(round(rng.uniform(1.2, min(1.9, height - 0.2 - h / 2)), 2))
            posters.append(PosterSpec(side, (c, z), (w, h), str(rng.choice(PHOTO_NAMES))))
        rooms.append(
            RoomSpec(
                x0,
                y0,
                x1,
                y1,
                height,
                floor=_texture(rng, "floor"),
                ceiling=_texture(rng, "ceiling"),
                walls=walls,
                doors=tuple(doors[(i, j)]),
                posters=tuple(posters),
                name=f"room {k + 1}",
            )
        )
        m = WALL_CLEARANCE
        regions.append((x0 + m, y0 + m, x1 - m, y1 - m))
        for d in doors[(i, j)]:
            pos = {
                "south": (d.center, y0),
                "north": (d.center, y1),
                "west": (x0, d.center),
                "east": (x1, d.center),
            }[d.side]
            avoid.append((pos[0], pos[1], DOOR_CLEARANCE))
        for _ in range(int(rng.integers(1, 3))):
            pos = (
                float(rng.uniform(x0 + 1, x1 - 1)),
                float(rng.uniform(y0 + 1, y1 - 1)),
                height - 0.3,
            )
            lights.append(
                LightSpec(
                    tuple(round(v, 3) for v in pos),
                    tuple(round(float(v), 3) for v in rng.uniform(0.35, 0.6, 3)),
                )
            )
    n_obj = int(rng.integers(OBJECT_COUNT[0], OBJECT_COUNT[1] + 1))
    n_obj = min(n_obj, 4 + 5 * len(rooms))  # small rooms cannot hold 20 objects with walkways
    objects = _scatter(rng, n_obj, regions, avoid, max_half=0.5)
    bounds = (
        float(xs[0]),
        float(ys[0]),
        float(max(r.x1 for r in rooms)),
        float(max(r.y1 for r in rooms)),
    )
    return SceneSpec(
        seed=seed,
        kind="indoor",
        rooms=tuple(rooms),
        objects=tuple(objects),
        landmarks=(),
        ground=None,
        sky=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        lights=tuple(lights),
        camera_bounds=bounds,
        camera_z=CAMERA_Z,
    )


def _open(rng: np.random.Generator, seed: int) -> SceneSpec:
    half = float(round(rng.uniform(6.0, 10.0), 2))
    bounds = (-half, -half, half, half)
    n_obj = int(rng.integers(OBJECT_COUNT[0], OBJECT_COUNT[1] + 1))
    objects = _scatter(
        rng,
        n_obj,
        [(-half + 0.5, -half + 0.5, half - 0.5, half - 0.5)],
        [(0.0, 0.0, 1.5)],
        max_half=0.8,
    )
    landmarks = []
    n_far = int(rng.integers(8, 13))
    for k in range(n_far):  # a ring of large, distinct landmarks around the region
        ang = 2 * np.pi * (k + rng.uniform(-0.3, 0.3)) / n_far
        dist = half + float(rng.uniform(4.0, 12.0))
        x, y = dist * np.cos(ang), dist * np.sin(ang)
        kind = str(rng.choice(["building", "tower", "tree", "billboard"]))
        tex = _texture(rng, "wall") if kind in ("building", "tower") else None
        rgba = (*_color(rng), 1.0)
        if kind == "building":
            s = (
                float(rng.uniform(1.5, 3.5)),
                float(rng.uniform(1.5, 3.5)),
                float(rng.uniform(1.5, 5)),
            )
            obj = ObjectSpec(
                "box", (x, y, s[2]), s, float(np.degrees(ang)), rgba, tex, name="building"
            )
        elif kind == "tower":
            s = (float(rng.uniform(0.6, 1.5)), float(rng.uniform(3, 7)), 0.0)
            obj = ObjectSpec("cylinder", (x, y, s[1]), s, 0.0, rgba, tex, name="tower")
        elif kind == "tree":
            s = (
                float(rng.uniform(1.2, 2.5)),
                float(rng.uniform(1.0, 2.0)),
                float(rng.uniform(1.5, 3.0)),
            )
            obj = ObjectSpec(
                "ellipsoid",
                (x, y, s[2] + 1.0),
                s,
                0.0,
                (0.1, float(rng.uniform(0.35, 0.7)), 0.1, 1.0),
                None,
                name="tree",
            )
        else:
            photo = TextureSpec("photo", (1, 1, 1), (0, 0, 0), photo=str(rng.choice(PHOTO_NAMES)))
            w = float(rng.uniform(2.0, 4.0))
            s = (0.1, w, w * 0.7)
            obj = ObjectSpec(
                "box",
                (x, y, s[2] + 1.0),
                s,
                float(np.degrees(ang)),
                (1, 1, 1, 1),
                photo,
                name="billboard",
            )
        landmarks.append(_rounded(obj))
    zen, hor = _color(rng, 0.2, 0.7), _color(rng, 0.6, 1.0)
    lights = (LightSpec((0.0, 0.0, 30.0), (0.7, 0.7, 0.7)),)
    return SceneSpec(
        seed=seed,
        kind="open",
        rooms=(),
        objects=tuple(objects),
        landmarks=tuple(landmarks),
        ground=_texture(rng, "ground"),
        sky=(zen, hor),
        lights=lights,
        camera_bounds=bounds,
        camera_z=CAMERA_Z,
    )


def _rounded(o: ObjectSpec) -> ObjectSpec:
    r = lambda v: tuple(float(round(float(x), 3)) for x in v)  # noqa: E731
    return ObjectSpec(
        o.shape,
        r(o.pos),
        r(o.size),
        float(round(o.yaw, 1)),
        r(o.rgba),
        o.texture,
        o.specular,
        o.shininess,
        o.name,
    )


def sample_scene(seed: int, kind: SceneKind = "mixed") -> SceneSpec:
    """Sample a procedural scene deterministically from ``seed``.

    Args:
        seed: any non-negative integer; the same seed and kind give the same scene.
        kind: ``"indoor"``, ``"open"`` or ``"mixed"`` (indoor with probability 3/4).

    Returns:
        A :class:`SceneSpec` with 5-20 objects in the camera's region.

    Raises:
        ValueError: on a negative seed or an unknown kind.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if kind not in ("indoor", "open", "mixed"):
        raise ValueError(f"unknown scene kind {kind!r}; expected indoor, open or mixed")
    rng = np.random.default_rng([seed, 0x5EED])
    if kind == "mixed":
        kind = "indoor" if rng.random() < 0.75 else "open"
    return _indoor(rng, seed) if kind == "indoor" else _open(rng, seed)
