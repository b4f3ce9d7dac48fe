"""Start images for a streaming session: any PNG/JPEG, array or PIL image -> model resolution."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs with a clear error


def load_image(image: Any, resolution: int) -> tuple[np.ndarray, str | None]:
    """An RGB start image at `resolution` x `resolution`, centre-cropped to square then resized.

    Args:
        image: a path (PNG, JPEG, anything Pillow reads), a `PIL.Image.Image`, or an array
            `(H, W, 3)` / `(H, W, 4)` / `(H, W)` uint8 (alpha dropped, grey repeated), or float in
            [0, 1].
        resolution: output side in pixels.

    Returns:
        `(frame (resolution, resolution, 3) uint8, note)`; `note` says what was done to the
        image (crop / resize / mode conversion) or is None when it was used as given.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable or corrupt file, an unsupported mode or array shape/dtype,
            NaN values, an empty or oversized image.
    """
    notes = []
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"start image {path} not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as opened:
                    _check_size(opened.width, opened.height, path)
                    opened.load()
                    pil = opened.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ValueError(
                f"{path}: the image header claims more than {MAX_IMAGE_PIXELS:,} pixels "
                "(a decompression bomb?); use a smaller image"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
            raise ValueError(f"{path} is not a readable image ({e})") from e
    elif isinstance(image, Image.Image):
        _check_size(image.width, image.height, "start image")
        pil = image
    else:
        pil = Image.fromarray(_array_to_uint8(image))
    if pil.width == 0 or pil.height == 0:
        raise ValueError("start image is empty")
    if pil.mode != "RGB":
        if pil.mode not in ("L", "LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "I;16", "I", "F"):
            raise ValueError(f"unsupported image mode {pil.mode!r}")
        if pil.mode in ("I;16", "I", "F"):
            raise ValueError(f"unsupported image mode {pil.mode!r} (use 8-bit RGB)")
        notes.append(f"converted {pil.mode} to RGB")
        pil = pil.convert("RGB")
    width, height = pil.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
        notes.append(f"centre-cropped {width}x{height} to {side}x{side}")
    if pil.size != (resolution, resolution):
        notes.append(f"resized {pil.size[0]}x{pil.size[1]} to {resolution}x{resolution}")
        pil = pil.resize((resolution, resolution), Image.Resampling.LANCZOS)
    frame = np.asarray(pil, dtype=np.uint8).copy()
    note = "; ".join(notes) if notes else None
    if note:
        logger.info("start image: %s", note)
    return frame, note


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Decoded pixels to frames. Shapes: `(T, 3, H, W)` float in [-1, 1] -> `(T, H, W, 3)`
    uint8 (rounded, clamped)."""
    frames = video.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


def _check_size(width: int, height: int, what: Any) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{what}: {width}x{height} is too large (at most {MAX_IMAGE_PIXELS:,} pixels)"
        )


def _array_to_uint8(array: Any) -> np.ndarray:
    """`(H, W)`, `(H, W, 3)` or `(H, W, 4)` uint8 / float in [0, 1] -> uint8 RGB(A)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("image array contains NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise ValueError("float image arrays must lie in [0, 1]")
        return np.ascontiguousarray(np.round(a * 255).astype(np.uint8))
    raise ValueError(f"image array must be uint8 or float, got {a.dtype}")
