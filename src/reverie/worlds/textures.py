"""Texture images for :class:`~reverie.worlds.spec.TextureSpec`: procedural patterns and photos.

Images are ``(S, S, 3)`` uint8 RGB arrays. Procedural patterns are drawn with numpy from the
spec's colours and seed; photographs come from ``skimage.data`` (bundled with scikit-image, no
download), grayscale ones tinted between the spec's two colours.
"""

from __future__ import annotations

import functools

import numpy as np
from skimage import data as skdata
from skimage.transform import resize

from reverie.worlds.spec import TextureSpec

TEXTURE_SIZE = 128
"""Side of procedural texture images, pixels."""
PHOTO_SIZE = 256
"""Longest side of photographs after downscaling, pixels."""


@functools.lru_cache(maxsize=32)
def load_photo(name: str) -> np.ndarray:
    """Load a ``skimage.data`` image as float RGB in [0, 1], longest side :data:`PHOTO_SIZE`.

    Returns:
        ``(H, W, 3)`` float32 (grayscale images are repeated over channels).

    Raises:
        ValueError: if ``name`` is not an image in ``skimage.data``.
    """
    loader = getattr(skdata, name, None)
    if loader is None or name.startswith("_"):
        raise ValueError(f"skimage.data has no image {name!r}")
    img = loader()
    if isinstance(img, tuple):  # stereo pairs: (left, right, disparity) -> left view
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    else:
        img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    scale = PHOTO_SIZE / max(img.shape[:2])
    if scale < 1:
        shape = (round(img.shape[0] * scale), round(img.shape[1] * scale), 3)
        img = resize(img, shape, anti_aliasing=True, preserve_range=True)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _is_gray(img: np.ndarray) -> bool:
    return bool(np.allclose(img[..., 0], img[..., 1]) and np.allclose(img[..., 1], img[..., 2]))


def _pattern(spec: TextureSpec, size: int) -> np.ndarray:
    """Blend weight in [0, 1] between color2 (0) and color1 (1), shape (size, size)."""
    rng = np.random.default_rng(spec.seed)
    v, u = np.meshgrid(
        np.linspace(0, 1, size, endpoint=False),
        np.linspace(0, 1, size, endpoint=False),
        indexing="ij",
    )
    k = int(rng.integers(2, 7))
    if spec.pattern == "checker":
        w = ((np.floor(u * k) + np.floor(v * k)) % 2).astype(np.float32)
    elif spec.pattern == "stripes":
        ang = rng.choice([0.0, np.pi / 4, np.pi / 2])
        w = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * k * (u * np.cos(ang) + v * np.sin(ang))))
    elif spec.pattern == "noise":
        w = np.zeros((size, size))
        for octave in range(4):  # value noise: sum of upsampled random grids
            n = 4 * 2**octave
            grid = rng.random((n, n))
            w += resize(grid, (size, size), order=3, mode="wrap") / 2**octave
        w = (w - w.min()) / (np.ptp(w) + 1e-8)
    elif spec.pattern == "bricks":
        rows = 2 * k
        row = np.floor(v * rows)
        shift = (row % 2) * 0.5 / k
        mortar = (np.abs(((v * rows) % 1) - 0.5) > 0.42) | (
            np.abs(((u + shift) * k % 1) - 0.5) > 0.46
        )
        w = np.where(mortar, 0.0, 0.8 + 0.2 * rng.random((rows, 1))[row.astype(int) % rows, 0])
    elif spec.pattern == "dots":
        cu, cv = (u * k) % 1 - 0.5, (v * k) % 1 - 0.5
        w = (np.hypot(cu, cv) < rng.uniform(0.15, 0.4)).astype(np.float32)
    elif spec.pattern == "planks":
        rows = 2 * k
        plank = np.floor(v * rows)
        grain = 0.5 + 0.5 * np.sin(
            2 * np.pi * (u * 3 + rng.random(rows)[plank.astype(int)] * 5 + 0.3 * np.sin(v * 40))
        )
        w = np.where(np.abs((v * rows) % 1 - 0.5) > 0.45, 0.0, 0.35 + 0.65 * grain)
    elif spec.pattern == "tiles":
        line = (np.abs((u * k) % 1 - 0.5) > 0.45) | (np.abs((v * k) % 1 - 0.5) > 0.45)
        w = np.where(line, 0.0, 1.0)
    elif spec.pattern == "gradient":
        w = 0.5 + 0.5 * np.cos(2 * np.pi * v)
    else:  # guarded by TextureSpec.__post_init__
        raise ValueError(f"unknown texture pattern {spec.pattern!r}")
    return np.asarray(w, dtype=np.float32)


def texture_image(spec: TextureSpec, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Render a texture spec to an RGB image.

    Args:
        spec: the texture.
        size: side of procedural images in pixels (photos keep their aspect ratio).

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: unknown pattern or photo.
    """
    c1, c2 = np.asarray(spec.color1, np.float32), np.asarray(spec.color2, np.float32)
    if spec.pattern == "photo":
        img = load_photo(spec.photo)
        if _is_gray(img):
            img = c2 + img[..., :1] * (c1 - c2)  # tint grayscale photos with the spec colours
    else:
        w = _pattern(spec, size)[..., None]
        img = c2 + w * (c1 - c2)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
