"""Rotation helpers: elementary rotations, relative yaw/pitch/roll, absolute camera orientation.

All angles here are in **radians**. Poses follow docs/conventions.md: world-to-camera rotations
`R (..., 3, 3)` with OpenCV camera axes (x right, y down, z forward) and a z-up world frame.

Relative rotations (RELIC arXiv 2512.04040 §3.3, Algorithm 1 line 15-16): `dR = R_{t+1} R_t^T`,
`Q = dR^T = R_y(-yaw) R_x(pitch) R_z(roll)`; yaw > 0 pans left, pitch > 0 tilts up, roll > 0 rolls
clockwise as seen by the viewer.

Absolute orientation uses the same angles applied to a reference camera that looks level along
world +x (`R_REFERENCE`): `R = relative_rotation(yaw, pitch, roll) @ R_REFERENCE`, so yaw is the
heading (counter-clockwise from +x seen from above), pitch the elevation and roll the clockwise
roll about the optical axis.
"""

from __future__ import annotations

import numpy as np
import torch

# World-to-camera rotation of a level camera looking along world +x (z-up world, OpenCV camera):
# rows are the camera axes in world coordinates: right = -y, down = -z, forward = +x.
R_REFERENCE = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

GIMBAL_EPS = 1e-9  # cos(pitch) below this is treated as gimbal lock (yaw set to 0)
ORTHONORMAL_ATOL = 1e-4  # tolerated max |R R^T - I| entry (float32 poses pass comfortably)
PARALLEL_EPS = 1e-6  # sin(angle between forward and up_world) below this is rejected by look_at


def _as_float(a):
    """numpy array (float64 unless already floating) or torch tensor, unchanged."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def _xp(a):
    return torch if isinstance(a, torch.Tensor) else np


def _matrix(rows):
    """Stack a 3x3 nested list of equal-shape arrays into (..., 3, 3); numpy or torch."""
    xp = _xp(rows[0][0])
    return xp.stack([xp.stack(row, -1) for row in rows], -2)


def rot_x(a):
    """Right-handed rotation about the x axis.

    Shapes: a (...,) radians -> (..., 3, 3). numpy (float64 for integer input) or torch in, same
    backend and dtype out.
    """
    a = _as_float(a)
    xp = _xp(a)
    c, s, one, zero = xp.cos(a), xp.sin(a), xp.ones_like(a), xp.zeros_like(a)
    return _matrix([[one, zero, zero], [zero, c, -s], [zero, s, c]])


def rot_y(a):
    """Right-handed rotation about the y axis.

    Shapes: a (...,) radians -> (..., 3, 3). numpy or torch in, same backend and dtype out.
    """
    a = _as_float(a)
    xp = _xp(a)
    c, s, one, zero = xp.cos(a), xp.sin(a), xp.ones_like(a), xp.zeros_like(a)
    return _matrix([[c, zero, s], [zero, one, zero], [-s, zero, c]])


def rot_z(a):
    """Right-handed rotation about the z axis.

    Shapes: a (...,) radians -> (..., 3, 3). numpy or torch in, same backend and dtype out.
    """
    a = _as_float(a)
    xp = _xp(a)
    c, s, one, zero = xp.cos(a), xp.sin(a), xp.ones_like(a), xp.zeros_like(a)
    return _matrix([[c, -s, zero], [s, c, zero], [zero, zero, one]])


def check_rotations(R: np.ndarray, name: str = "R", atol: float = ORTHONORMAL_ATOL) -> np.ndarray:
    """Validate rotation matrices and return them as a float64 numpy array.

    Shapes: R (..., 3, 3). Raises ValueError naming `name` if the shape is wrong, an entry is
    NaN/inf, `max |R R^T - I| > atol`, or `det R <= 0` (reflections are not rotations).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {R.shape}")
    if not np.isfinite(R).all():
        raise ValueError(f"{name} contains NaN or inf")
    if R.size == 0:
        return R
    err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max()
    if err > atol:
        raise ValueError(f"{name} is not orthonormal: max |R R^T - I| = {err:.3g} > {atol:g}")
    if (np.linalg.det(R) <= 0).any():
        raise ValueError(f"{name} has det <= 0 (a reflection, not a rotation)")
    return R


def relative_rotation(yaw, pitch, roll):
    """Relative rotation `dR = R_{t+1} R_t^T` from yaw/pitch/roll (inverse of `relative_euler`).

    `dR = Q^T` with `Q = R_y(-yaw) R_x(pitch) R_z(roll)` (docs/conventions.md, RELIC arXiv
    2512.04040 §3.3). yaw > 0 = pan left, pitch > 0 = tilt up, roll > 0 = roll clockwise.

    Shapes: yaw, pitch, roll (...,) broadcastable, radians -> dR (..., 3, 3).
    Accepts numpy arrays/floats or torch tensors (all of one backend); returns the same backend.
    """
    if isinstance(yaw, torch.Tensor):
        yaw, pitch, roll = torch.broadcast_tensors(yaw, pitch, roll)
    else:
        yaw, pitch, roll = np.broadcast_arrays(_as_float(yaw), _as_float(pitch), _as_float(roll))
    Q = rot_y(-yaw) @ rot_x(pitch) @ rot_z(roll)  # (..., 3, 3) new camera axes in the old frame
    return Q.transpose(-1, -2) if isinstance(Q, torch.Tensor) else np.swapaxes(Q, -1, -2)


def relative_euler(dR: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decompose a relative rotation `dR = R_{t+1} R_t^T` into (yaw, pitch, roll).

    Solves `dR^T = Q = R_y(-yaw) R_x(pitch) R_z(roll)` (docs/conventions.md; RELIC arXiv 2512.04040
    §3.3, Algorithm 1 line 16). yaw > 0 = pan left, pitch > 0 = tilt up, roll > 0 = roll cw.
    Ranges: yaw, roll in (-pi, pi], pitch in [-pi/2, pi/2]. At gimbal lock (|pitch| = pi/2) yaw is
    set to 0 and the remaining rotation goes to roll.

    Shapes: dR (..., 3, 3) numpy -> three float64 arrays (...,), radians.
    Raises ValueError if dR is not a proper rotation (see `check_rotations`).
    """
    Q = np.swapaxes(check_rotations(dR, "dR"), -1, -2)
    # Q[:, 2] = (-sin(yaw) cos(pitch), -sin(pitch), cos(yaw) cos(pitch))
    # Q[1, :] = (cos(pitch) sin(roll), cos(pitch) cos(roll), -sin(pitch))
    cos_pitch = np.hypot(Q[..., 0, 2], Q[..., 2, 2])
    pitch = np.arctan2(-Q[..., 1, 2], cos_pitch)
    locked = cos_pitch < GIMBAL_EPS
    yaw = np.where(locked, 0.0, -np.arctan2(Q[..., 0, 2], Q[..., 2, 2]))
    # At gimbal lock with yaw = 0: Q = R_x(pitch) R_z(roll), whose row 0 is (cos, -sin, 0)(roll).
    roll = np.where(
        locked,
        np.arctan2(-Q[..., 0, 1], Q[..., 0, 0]),
        np.arctan2(Q[..., 1, 0], Q[..., 1, 1]),
    )
    return yaw, pitch, roll


def R_from_yaw_pitch_roll(yaw, pitch, roll):
    """World-to-camera rotation of a camera with ABSOLUTE heading, elevation and roll.

    World frame z up; camera OpenCV (x right, y down, z forward).
      - yaw: heading of the optical axis in the world xy-plane, counter-clockwise from +x seen from
        above (increasing yaw turns the camera left, like `pan_left`); yaw = 0 looks along +x.
      - pitch: elevation of the optical axis above the horizon (positive = looking up), in
        (-pi/2, pi/2).
      - roll: rotation about the optical axis, positive = clockwise as seen by the viewer.
    The optical axis is `(cos yaw cos pitch, sin yaw cos pitch, sin pitch)`; with roll = 0 the
    camera's x axis is horizontal. Equals `relative_rotation(yaw, pitch, roll) @ R_REFERENCE`.

    Shapes: yaw, pitch, roll (...,) broadcastable, radians -> R (..., 3, 3).
    Accepts numpy or torch (one backend); returns the same backend.
    """
    dR = relative_rotation(yaw, pitch, roll)
    if isinstance(dR, torch.Tensor):
        return dR @ torch.as_tensor(R_REFERENCE, dtype=dR.dtype, device=dR.device)
    return dR @ R_REFERENCE.astype(dR.dtype)


def yaw_pitch_roll_from_R(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ABSOLUTE (yaw, pitch, roll) of world-to-camera rotations; inverse of `R_from_yaw_pitch_roll`.

    See `R_from_yaw_pitch_roll` for the meaning of the angles. Ranges: yaw, roll in (-pi, pi],
    pitch in [-pi/2, pi/2]. Exact round trip (to ~1e-12) away from gimbal lock; looking straight
    up/down (|pitch| = pi/2) sets yaw = 0 and folds the heading into roll.

    Shapes: R (..., 3, 3) numpy -> three float64 arrays (...,), radians.
    Raises ValueError if R is not a proper rotation.
    """
    R = check_rotations(R)
    return relative_euler(R @ R_REFERENCE.T)


def look_at(forward, up_world=(0.0, 0.0, 1.0), roll=0.0) -> np.ndarray:
    """World-to-camera rotation of an OpenCV camera looking along `forward`.

    The camera's x axis (right) is `forward x up_world` normalised, so the horizon is level when
    roll = 0; y (down) completes the right-handed frame; `roll` then rotates the camera clockwise
    (as seen by the viewer) about its optical axis. For up_world = +z this equals
    `R_from_yaw_pitch_roll(yaw, pitch, roll)` with the heading/elevation of `forward`.

    Shapes: forward (..., 3) world direction (any positive length), up_world (3,) or (..., 3),
    roll (...,) radians -> R (..., 3, 3) float64.
    Raises ValueError if forward or up_world is zero/non-finite or if forward is (nearly) parallel
    to up_world (angle < ~1e-6 rad): the heading is then undefined, so build such a camera with
    `R_from_yaw_pitch_roll(yaw, +-pi/2, roll)` instead.
    """
    f = np.asarray(forward, dtype=np.float64)
    up = np.asarray(up_world, dtype=np.float64)
    if f.shape[-1:] != (3,) or up.shape[-1:] != (3,):
        raise ValueError(f"forward and up_world must end in 3, got {f.shape} and {up.shape}")
    if not (np.isfinite(f).all() and np.isfinite(up).all()):
        raise ValueError("forward / up_world contain NaN or inf")
    f_norm, up_norm = np.linalg.norm(f, axis=-1), np.linalg.norm(up, axis=-1)
    if (f_norm == 0).any() or (up_norm == 0).any():
        raise ValueError("forward and up_world must be non-zero vectors")
    z = f / f_norm[..., None]  # (..., 3) optical axis
    x = np.cross(z, up / up_norm[..., None])  # (..., 3) right, |x| = sin(angle(f, up))
    x_norm = np.linalg.norm(x, axis=-1)
    if (x_norm < PARALLEL_EPS).any():
        raise ValueError(
            "look_at: forward is (nearly) parallel to up_world, so the heading is undefined; "
            "use R_from_yaw_pitch_roll(yaw, +-pi/2, roll) or another up_world"
        )
    x = x / x_norm[..., None]
    y = np.cross(z, x)  # (..., 3) down
    R = np.stack(np.broadcast_arrays(x, y, z), axis=-2)  # (..., 3, 3) rows = camera axes
    zero = np.zeros_like(np.asarray(roll, dtype=np.float64))
    return relative_rotation(zero, zero, roll) @ R
