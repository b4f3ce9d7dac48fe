"""Headless MuJoCo rendering of a :class:`SceneSpec` from OpenCV-convention camera poses.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is first imported; :func:`configure_gl`
sets it to ``egl`` unless the user chose one (``osmesa`` also works, at a similar speed for
small images). On Debian the system packages are ``libegl1 libegl-mesa0 libgl1-mesa-dri
libgl1 libglx-mesa0 libgles2 libosmesa6``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from reverie.worlds.mjcf import CAMERA_NAME, build_mjcf
from reverie.worlds.spec import SceneSpec

GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 libgles2 libosmesa6"
RESOLUTIONS = (64, 128, 256)
"""Resolutions (square, pixels) the data pipeline is tested at; others work too."""

# OpenCV camera axes (x right, y down, z forward) -> MuJoCo camera axes (x right, y up, z back).
_CV_TO_MJ = np.diag([1.0, -1.0, -1.0])


def configure_gl() -> str:
    """Choose MuJoCo's headless GL backend (``MUJOCO_GL``, default ``egl``); returns it."""
    return os.environ.setdefault("MUJOCO_GL", "egl")


def intrinsics(width: int, height: int, fovy_deg: float) -> np.ndarray:
    """Pinhole intrinsics of a MuJoCo camera with vertical field of view ``fovy_deg``.

    Returns:
        ``K (3, 3)`` float64 in pixels, ``fx = fy = (H/2) / tan(fovy/2)``, principal point at the
        image centre (see ``docs/conventions.md``).
    """
    f = (height / 2) / math.tan(math.radians(fovy_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


class SceneRenderer:
    """Render RGB (and optionally depth) images of one scene.

    Use as a context manager, or call :meth:`close` (MuJoCo's GL context must be released
    before interpreter exit).

    Args:
        spec: the scene.
        width, height: image size in pixels.

    Raises:
        RuntimeError: if MuJoCo cannot create a headless GL context (names the missing
            system packages).
    """

    def __init__(self, spec: SceneSpec, width: int = 64, height: int = 64) -> None:
        configure_gl()
        try:
            import mujoco
        except ImportError as e:  # pragma: no cover - mujoco is a hard dependency
            raise RuntimeError("mujoco is not installed: pip install mujoco==3.17.0") from e
        self._mujoco = mujoco
        self.spec, self.width, self.height = spec, width, height
        model = build_mjcf(spec, width, height)
        self.model = mujoco.MjModel.from_xml_string(model.xml, assets=model.assets)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        self._cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
        try:
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        except Exception as e:
            raise RuntimeError(
                f"MuJoCo could not open a headless GL context with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL')!r} ({e}). On Debian/Ubuntu install: "
                f"apt-get install {GL_PACKAGES}") from e
        self._depth = False

    @property
    def K(self) -> np.ndarray:
        """Intrinsics ``(3, 3)`` float64, pixels."""
        return intrinsics(self.width, self.height, self.spec.fovy)

    def _place(self, R: np.ndarray, P: np.ndarray) -> None:
        R = np.asarray(R, dtype=np.float64)
        P = np.asarray(P, dtype=np.float64)
        if R.shape != (3, 3) or P.shape != (3,):
            raise ValueError(f"expected R (3, 3) and P (3,), got {R.shape} and {P.shape}")
        if not (np.isfinite(R).all() and np.isfinite(P).all()):
            raise ValueError("camera pose contains NaN or inf")
        self.data.cam_xpos[self._cam] = P
        self.data.cam_xmat[self._cam] = (R.T @ _CV_TO_MJ).reshape(-1)

    def render(self, R: np.ndarray, P: np.ndarray) -> np.ndarray:
        """RGB image from world-to-camera ``R (3, 3)`` and camera centre ``P (3,)`` (metres).

        Returns:
            ``(H, W, 3)`` uint8.
        """
        self._place(R, P)
        if self._depth:
            self._renderer.disable_depth_rendering()
            self._depth = False
        self._renderer.update_scene(self.data, camera=self._cam)
        return self._renderer.render().copy()

    def render_depth(self, R: np.ndarray, P: np.ndarray) -> np.ndarray:
        """Depth image (distance along the optical axis, metres), ``(H, W)`` float32."""
        self._place(R, P)
        if not self._depth:
            self._renderer.enable_depth_rendering()
            self._depth = True
        self._renderer.update_scene(self.data, camera=self._cam)
        return self._renderer.render().astype(np.float32)

    def render_trajectory(self, R: np.ndarray, P: np.ndarray, *,
                          depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Render a whole camera path.

        Shapes:
            R: ``(T, 3, 3)``, P: ``(T, 3)`` -> frames ``(T, H, W, 3)`` uint8 and, when
            ``depth``, depths ``(T, H, W)`` float32 metres (else ``None``).
        """
        if R.ndim != 3 or P.ndim != 2 or len(R) != len(P):
            raise ValueError(f"expected R (T, 3, 3) and P (T, 3), got {R.shape} and {P.shape}")
        frames = np.empty((len(R), self.height, self.width, 3), np.uint8)
        depths = np.empty((len(R), self.height, self.width), np.float32) if depth else None
        for t in range(len(R)):
            frames[t] = self.render(R[t], P[t])
        if depths is not None:
            for t in range(len(R)):
                depths[t] = self.render_depth(R[t], P[t])
        return frames, depths

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SceneRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
