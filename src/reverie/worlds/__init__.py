"""Procedural 3D worlds: scene specs, rendering, camera trajectories (RELIC §3)."""

from reverie.worlds.sampling import sample_scene
from reverie.worlds.spec import (
    DoorSpec,
    LightSpec,
    ObjectSpec,
    PosterSpec,
    RoomSpec,
    SceneSpec,
    TextureSpec,
)

__all__ = [
    "DoorSpec",
    "LightSpec",
    "ObjectSpec",
    "PosterSpec",
    "RoomSpec",
    "SceneSpec",
    "TextureSpec",
    "sample_scene",
]
