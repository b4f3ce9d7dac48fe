"""Scene specifications: frozen, JSON round-trippable descriptions of procedural 3D worlds.

A :class:`SceneSpec` fully determines a scene: geometry, textures, lights and the region the
camera may move in. It is sampled from a seed by :func:`reverie.worlds.sampling.sample_scene`,
turned into MuJoCo MJCF by :mod:`reverie.worlds.mjcf`, described in words by
:mod:`reverie.worlds.caption`, and gives the collision map used by camera trajectories
(:mod:`reverie.worlds.freespace`).

Frames and units follow ``docs/conventions.md``: world z up, metres, angles in degrees.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from reverie.config_utils import from_dict

Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]
RGB = tuple[float, float, float]

SCHEMA_VERSION = 1

TEXTURE_PATTERNS = ("checker", "stripes", "noise", "bricks", "dots", "planks", "tiles", "gradient")
"""Procedural texture patterns (see :mod:`reverie.worlds.textures`)."""

PHOTO_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "stereo_motorcycle",
    "camera",
    "coins",
    "moon",
    "text",
    "clock",
    "page",
)
"""Photographs from ``skimage.data`` used as posters and billboards."""

MATERIAL_PHOTOS = ("brick", "grass", "gravel")
"""Texture photographs from ``skimage.data`` used on surfaces (tinted, tiled)."""

SIDES = ("south", "east", "north", "west")
"""Wall sides of an axis-aligned room: south = min y, east = max x, north = max y, west = min x."""


@dataclass(frozen=True)
class TextureSpec:
    """A surface texture: a procedural pattern or a (tinted) photograph.

    Attributes:
        pattern: one of :data:`TEXTURE_PATTERNS`, or ``"photo"``.
        color1, color2: RGB in [0, 1]; the pattern's two colours. Grayscale photos are
            tinted from ``color2`` (dark) to ``color1`` (light); colour photos ignore them.
        photo: ``skimage.data`` name when ``pattern == "photo"``, else ``None``.
        repeat: texture repeats per metre of surface (tiling density), > 0.
        seed: seed of the pattern's random details (noise, brick jitter).
    """

    pattern: str
    color1: RGB
    color2: RGB
    photo: str | None = None
    repeat: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern == "photo":
            if self.photo not in PHOTO_NAMES + MATERIAL_PHOTOS:
                raise ValueError(
                    f"unknown photo {self.photo!r}; expected one of {PHOTO_NAMES + MATERIAL_PHOTOS}"
                )
        elif self.pattern not in TEXTURE_PATTERNS:
            raise ValueError(
                f"unknown texture pattern {self.pattern!r}; expected one of "
                f"{TEXTURE_PATTERNS + ('photo',)}"
            )
        if not self.repeat > 0:
            raise ValueError(f"texture repeat must be > 0, got {self.repeat}")


@dataclass(frozen=True)
class DoorSpec:
    """A doorway in a room wall.

    Attributes:
        side: wall side, one of :data:`SIDES`.
        center: position of the door centre along the wall, world coordinate (x for
            south/north walls, y for east/west walls), metres.
        width, height: door opening size in metres.
    """

    side: str
    center: float
    width: float
    height: float


@dataclass(frozen=True)
class PosterSpec:
    """A framed photograph hung on a wall (a thin textured box).

    Attributes:
        side: wall side, one of :data:`SIDES`.
        center: (along-wall coordinate, height of the poster centre), metres.
        size: (width, height) in metres.
        photo: ``skimage.data`` name, one of :data:`PHOTO_NAMES`.
    """

    side: str
    center: Vec2
    size: Vec2
    photo: str


@dataclass(frozen=True)
class RoomSpec:
    """An axis-aligned room ``[x0, x1] x [y0, y1] x [0, height]`` with its own surfaces.

    Walls are boxes of thickness ``wall_thickness`` lying inside the room's rectangle, so two
    rooms sharing a boundary each keep their own wall texture on their side.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    height: float
    floor: TextureSpec
    ceiling: TextureSpec
    walls: tuple[TextureSpec, TextureSpec, TextureSpec, TextureSpec]
    doors: tuple[DoorSpec, ...] = ()
    posters: tuple[PosterSpec, ...] = ()
    name: str = "room"
    wall_thickness: float = 0.1


@dataclass(frozen=True)
class ObjectSpec:
    """A MuJoCo primitive in the scene.

    Attributes:
        shape: "box", "sphere", "cylinder", "capsule" or "ellipsoid".
        pos: centre in world coordinates, metres.
        size: MuJoCo size parameters (half extents for a box/ellipsoid, (radius, half
            height, unused) for a cylinder/capsule, (radius, unused, unused) for a sphere).
        yaw: rotation about world z, degrees.
        rgba: base colour, in [0, 1].
        texture: optional texture; multiplies the base colour.
        specular, shininess: material parameters in [0, 1].
        name: short description used in captions ("large red box").
    """

    shape: Literal["box", "sphere", "cylinder", "capsule", "ellipsoid"]
    pos: Vec3
    size: Vec3
    yaw: float
    rgba: tuple[float, float, float, float]
    texture: TextureSpec | None = None
    specular: float = 0.3
    shininess: float = 0.3
    name: str = "object"

    def footprint_radius(self) -> float:
        """Radius (metres) of a vertical cylinder around ``pos`` that contains the object."""
        sx, sy, _ = self.size
        if self.shape in ("sphere",):
            return sx
        if self.shape in ("cylinder", "capsule"):
            return sx
        return (sx**2 + sy**2) ** 0.5

    def z_range(self) -> Vec2:
        """Lowest and highest world z of the object, metres."""
        sx, sy, sz = self.size
        half = {"box": sz, "ellipsoid": sz, "sphere": sx, "cylinder": sy, "capsule": sy + sx}
        h = half[self.shape]
        return (self.pos[2] - h, self.pos[2] + h)


@dataclass(frozen=True)
class LightSpec:
    """A point light: position (metres) and diffuse RGB intensity in [0, 1]."""

    pos: Vec3
    diffuse: RGB


@dataclass(frozen=True)
class SceneSpec:
    """A whole procedural scene, sampled deterministically from ``seed``.

    Attributes:
        seed: the sampling seed.
        kind: ``"indoor"`` (connected rooms) or ``"open"`` (ground, sky, landmarks).
        rooms: indoor rooms (empty for open scenes).
        objects: primitives inside the camera's region (the camera must avoid them).
        landmarks: distant objects outside the camera's region (open scenes), so every
            viewing direction shows content.
        ground: ground texture of an open scene (``None`` indoors).
        sky: (zenith, horizon) RGB of the open scene's gradient sky.
        lights: point lights.
        camera_bounds: (x0, y0, x1, y1) rectangle the camera may move in, metres.
        camera_z: (min, max) camera height above the floor, metres.
        fovy: vertical field of view of the camera, degrees.
    """

    seed: int
    kind: Literal["indoor", "open"]
    rooms: tuple[RoomSpec, ...]
    objects: tuple[ObjectSpec, ...]
    landmarks: tuple[ObjectSpec, ...]
    ground: TextureSpec | None
    sky: tuple[RGB, RGB]
    lights: tuple[LightSpec, ...]
    camera_bounds: tuple[float, float, float, float]
    camera_z: Vec2
    fovy: float = 70.0
    version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists); inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Raises:
            ValueError: on unknown or missing fields, a wrong schema version, or bad values.
        """
        if data.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(
                f"scene spec version {data.get('version')} is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        return from_dict(cls, data, "scene")

    @classmethod
    def from_json(cls, text: str) -> SceneSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"scene spec is not valid JSON: {e}") from e
        return cls.from_dict(data)
