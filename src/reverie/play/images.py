"""Start images for `reverie play`: a procedural scene by seed, or an uploaded picture.

Scenes come from ``reverie.worlds`` (RELIC §3): ``sample_scene(seed, "mixed")`` rendered from the
first pose of a ``revisit`` camera path (a free, level viewpoint), with ``scene_caption`` as the
default prompt. Dataset episodes draw their scene seeds from ``SeedSequence`` hashes in
``[0, 2**31)`` (``reverie.data.render_job.episode_seeds``), so the seeds people type are, in
practice, scenes no model was trained on.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from reverie.engine.images import load_image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # width * height; larger images are refused before decoding


@dataclass(frozen=True)
class StartImage:
    """A start frame and its default prompt.

    Shapes: image ``(res, res, 3)`` uint8 RGB.
    """

    image: np.ndarray
    caption: str
    source: dict


def render_scene(seed: int, resolution: int, fps: int = 16) -> StartImage:
    """Render the start view of procedural scene ``seed`` (indoor or open, RELIC §3).

    Uses ``reverie.worlds.render``'s process-wide GL context, which stays current on the first
    thread that rendered (EGL forbids making it current on a second thread): call it from one
    thread per process. The server runs it in a worker process of its own.

    Shapes: returns image ``(resolution, resolution, 3)`` uint8.
    Raises:
        ValueError: negative seed; RuntimeError: no headless GL (names the packages).
    """
    from reverie.worlds import sample_scene
    from reverie.worlds.caption import scene_caption
    from reverie.worlds.render import render_start_frame
    from reverie.worlds.trajectory import sample_trajectory

    spec = sample_scene(seed, "mixed")
    path = sample_trajectory(spec, "revisit", seconds=1.0 / fps, fps=fps, seed=seed)
    image = render_start_frame(spec, path.R, path.P, resolution)  # (res, res, 3) uint8
    return StartImage(image, scene_caption(spec), {"kind": "scene", "scene_seed": seed})


def decode_upload(data: bytes, resolution: int) -> np.ndarray:
    """Decode an uploaded image and centre-crop / resize it to a square start frame.

    Shapes: returns ``(resolution, resolution, 3)`` uint8 RGB.
    Raises:
        ValueError: empty, larger than ``MAX_UPLOAD_BYTES`` or ``MAX_UPLOAD_PIXELS``, or not a
            decodable image; the message is meant for the user.
    """
    if not data:
        raise ValueError("the upload is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"image larger than {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise ValueError(
                    f"image of {img.width}x{img.height} pixels is too large "
                    f"(at most {MAX_UPLOAD_PIXELS // 1_000_000} megapixels)"
                )
            img = ImageOps.exif_transpose(img).convert("RGB")
            return load_image(img, resolution)[0]  # the engine's centre crop + resize
    except UnidentifiedImageError:
        raise ValueError("not a readable image (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # truncated, corrupt
        raise ValueError(f"not a readable image (PNG, JPEG, WebP, ...): {e}") from None


class UploadStore:
    """The most recent uploads, by random id (least recently used dropped beyond ``capacity``).

    Thread-safe. Images are stored already cropped to the model's resolution.
    """

    def __init__(self, capacity: int = 32) -> None:
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._capacity = capacity
        self._lock = Lock()

    def put(self, upload_id: str, image: np.ndarray) -> None:
        with self._lock:
            self._items[upload_id] = image
            self._items.move_to_end(upload_id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, upload_id: str) -> np.ndarray:
        """Raises KeyError if the id is unknown or was evicted."""
        with self._lock:
            self._items.move_to_end(upload_id)
            return self._items[upload_id]
