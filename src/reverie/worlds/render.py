"""Headless MuJoCo rendering of a :class:`SceneSpec` from OpenCV-convention camera poses.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is first imported; :func:`configure_gl`
sets it to ``egl`` unless the user chose one (``osmesa`` also works, at a similar speed for
small images). On Debian the system packages are ``libegl1 libegl-mesa0 libgl1-mesa-dri
libgl1 libglx-mesa0 libgles2 libosmesa6``.
"""

from __future__ import annotations

import atexit
import math
import os

import numpy as np

from reverie.worlds.mjcf import CAMERA_NAME, compile_model
from reverie.worlds.spec import SceneSpec

GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 libgles2 libosmesa6"
RESOLUTIONS = (64, 128, 256)
"""Resolutions (square, pixels) the data pipeline is tested at; others work too."""

# OpenCV camera axes (x right, y down, z forward) -> MuJoCo camera axes (x right, y up, z back).
_CV_TO_MJ = np.diag([1.0, -1.0, -1.0])


def configure_gl() -> str:
    """Choose MuJoCo's headless GL backend (``MUJOCO_GL``, default ``egl``); returns it.

    Also keeps Mesa's software rasteriser (llvmpipe) on the calling thread
    (``LP_NUM_THREADS=0``) unless set: for images of 64-256 px its worker threads cost more
    than they save (measured 740 vs 450 frames/s at 64x64 on 2 cores) and they would
    oversubscribe the cores when several rendering processes run.
    """
    os.environ.setdefault("LP_NUM_THREADS", "0")
    return os.environ.setdefault("MUJOCO_GL", "egl")


_GL_CONTEXT = None


def _shared_gl_context():
    """One headless GL context per process, shared by all renderers.

    Creating a context and compiling its shaders costs ~0.2 s on llvmpipe, as long as rendering
    a whole 64x64 episode; each scene only needs its own (cheap) ``MjrContext``.
    """
    global _GL_CONTEXT
    if _GL_CONTEXT is None:
        configure_gl()
        from mujoco import gl_context

        try:
            ctx = gl_context.GLContext(64, 64)
        except Exception as e:
            raise RuntimeError(
                f"MuJoCo could not open a headless GL context with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL')!r} ({e}). On Debian/Ubuntu install: "
                f"apt-get install {GL_PACKAGES}"
            ) from e
        _GL_CONTEXT = ctx
        atexit.register(_free_gl_context)
    _GL_CONTEXT.make_current()
    return _GL_CONTEXT


def _free_gl_context() -> None:
    global _GL_CONTEXT
    if _GL_CONTEXT is not None:
        ctx, _GL_CONTEXT = _GL_CONTEXT, None
        try:
            ctx.free()
        except Exception:  # noqa: BLE001 - the EGL display may already be terminated at exit
            ctx._context = None  # keep GLContext.__del__ from trying again


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

    Use as a context manager, or call :meth:`close` to free the scene's GPU resources.

    Args:
        spec: the scene.
        width, height: image size in pixels.

    Raises:
        RuntimeError: if MuJoCo cannot create a headless GL context (names the missing
            system packages).
    """

    def __init__(self, spec: SceneSpec, width: int = 64, height: int = 64) -> None:
        configure_gl()
        import mujoco

        self._mj = mujoco
        self.spec, self.width, self.height = spec, width, height
        self.model = compile_model(spec, width, height)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        _shared_gl_context()
        self._ctx = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(self.model, maxgeom=max(1000, 2 * self.model.ngeom))
        self._opt = mujoco.MjvOption()
        self._pert = mujoco.MjvPerturb()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = mujoco.mj_name2id(
            self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME
        )
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._depth = np.empty((height, width), np.float32)

    @property
    def K(self) -> np.ndarray:
        """Intrinsics ``(3, 3)`` float64, pixels."""
        return intrinsics(self.width, self.height, self.spec.fovy)

    def _draw(self, R: np.ndarray, P: np.ndarray, *, depth: bool) -> None:
        if self._ctx is None:
            raise RuntimeError("renderer is closed")
        R = np.asarray(R, dtype=np.float64)
        P = np.asarray(P, dtype=np.float64)
        if R.shape != (3, 3) or P.shape != (3,):
            raise ValueError(f"expected R (3, 3) and P (3,), got {R.shape} and {P.shape}")
        if not (np.isfinite(R).all() and np.isfinite(P).all()):
            raise ValueError("camera pose contains NaN or inf")
        mj, cam = self._mj, self._cam.fixedcamid
        self.data.cam_xpos[cam] = P
        self.data.cam_xmat[cam] = (R.T @ _CV_TO_MJ).reshape(-1)
        _shared_gl_context()
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        mj.mjv_updateScene(
            self.model,
            self.data,
            self._opt,
            self._pert,
            self._cam,
            mj.mjtCatBit.mjCAT_ALL,
            self._scene,
        )
        mj.mjr_render(self._rect, self._scene, self._ctx)
        mj.mjr_readPixels(self._rgb, self._depth if depth else None, self._rect, self._ctx)

    def render(self, R: np.ndarray, P: np.ndarray) -> np.ndarray:
        """RGB image from world-to-camera ``R (3, 3)`` and camera centre ``P (3,)`` (metres).

        Returns:
            ``(H, W, 3)`` uint8.
        """
        self._draw(R, P, depth=False)
        return self._rgb[::-1].copy()  # OpenGL rows run bottom-up

    def render_depth(self, R: np.ndarray, P: np.ndarray) -> np.ndarray:
        """Depth image (distance along the optical axis, metres), ``(H, W)`` float32."""
        self._draw(R, P, depth=True)
        extent = self.model.stat.extent
        near = float(self.model.vis.map.znear * extent)
        far = float(self.model.vis.map.zfar * extent)
        # Window depth z in [0, 1] is hyperbolic in the distance d: z = (1/n - 1/d) / (1/n - 1/f).
        z = self._depth[::-1].astype(np.float64)
        return (near * far / (far - z * (far - near))).astype(np.float32)

    def render_trajectory(
        self, R: np.ndarray, P: np.ndarray, *, depth: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
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
            if depths is None:
                frames[t] = self.render(R[t], P[t])
            else:
                depths[t] = self.render_depth(R[t], P[t])
                frames[t] = self._rgb[::-1]
        return frames, depths

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.free()
            self._ctx = None

    def __enter__(self) -> SceneRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_start_frame(
    spec: SceneSpec, R: np.ndarray, P: np.ndarray, resolution: int
) -> np.ndarray:
    """The start frame of a camera path: the view of ``spec`` from its first pose.

    What a stream starts from (``reverie explore --scene``, ``reverie play``, ``reverie eval
    speed``). Opens a :class:`SceneRenderer` for this one frame and frees it again; render the
    rest of a path with a renderer of its own. The renderer's GL context is process-wide and
    stays current on the first thread that rendered (see :func:`_shared_gl_context`).

    Shapes:
        R: ``(T, 3, 3)`` float world-to-camera rotations, ``T >= 1`` (OpenCV camera axes).
        P: ``(T, 3)`` float camera centres, world metres (docs/conventions.md).
        returns ``(resolution, resolution, 3)`` uint8 RGB in [0, 255], rendered at
        ``R[0], P[0]``.
    Raises:
        ValueError: ``R[0]`` not ``(3, 3)``, ``P[0]`` not ``(3,)``, or NaN / inf in the pose.
        RuntimeError: no headless GL context (names the system packages to install).
    """
    with SceneRenderer(spec, resolution, resolution) as renderer:
        return renderer.render(R[0], P[0])  # (res, res, 3) uint8
