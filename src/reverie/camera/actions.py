"""The 13-DoF RELIC action space: poses -> actions (Algorithm 1) and actions -> poses (§4.1.2).

RELIC arXiv 2512.04040 §3.3 (Algorithm 1) and §4.1.2; conventions in docs/conventions.md.
Actions are frame-aligned float32 vectors `(..., T, 13)`: `actions[t]` is the motion from frame
`t-1` to `t` and `actions[0]` is the prepended `static` action. Translation entries are unitless
ratios (metres / d-bar, or metres / gamma at inference); rotation entries are degrees per frame.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from reverie.camera.rotations import check_rotations, relative_euler, relative_rotation

ACTION_NAMES: tuple[str, ...] = (
    "dolly_in",
    "dolly_out",
    "truck_left",
    "truck_right",
    "pedestal_up",
    "pedestal_down",
    "tilt_up",
    "tilt_down",
    "pan_left",
    "pan_right",
    "roll_cw",
    "roll_ccw",
    "static",
)
NUM_ACTIONS = len(ACTION_NAMES)  # 13
ACTION_INDEX: dict[str, int] = {name: i for i, name in enumerate(ACTION_NAMES)}
TRANSLATION_INDICES: tuple[int, ...] = tuple(range(0, 6))
ROTATION_INDICES: tuple[int, ...] = tuple(range(6, 12))
MOTION_INDICES: tuple[int, ...] = TRANSLATION_INDICES + ROTATION_INDICES
STATIC_INDEX = ACTION_INDEX["static"]

# Signed axes as (positive name, negative name): value = a[positive] - a[negative].
# Camera-frame translation (x right, y down, z forward) and relative (yaw, pitch, roll).
TRANSLATION_AXES: tuple[tuple[str, str], ...] = (
    ("truck_right", "truck_left"),
    ("pedestal_down", "pedestal_up"),
    ("dolly_in", "dolly_out"),
)
ROTATION_AXES: tuple[tuple[str, str], ...] = (
    ("pan_left", "pan_right"),
    ("tilt_up", "tilt_down"),
    ("roll_cw", "roll_ccw"),
)
OPPOSITE_ACTION: dict[str, str] = {
    **{pos: neg for pos, neg in TRANSLATION_AXES + ROTATION_AXES},
    **{neg: pos for pos, neg in TRANSLATION_AXES + ROTATION_AXES},
}

DEFAULT_ROTATION_DEG = 2.0  # interactive / scripted rotation speed, degrees per frame
DEFAULT_TRANSLATION_EPS = 1e-6  # metres per frame; smaller camera-frame components are zeroed
DEFAULT_ROTATION_EPS_DEG = 1e-4  # degrees per frame; smaller yaw/pitch/roll are zeroed


def _split_signed(values: np.ndarray, axes, out: np.ndarray) -> None:
    """Write signed values (..., 3) as non-negative magnitudes into the named pairs of `out`."""
    for k, (pos, neg) in enumerate(axes):
        out[..., ACTION_INDEX[pos]] = np.maximum(values[..., k], 0.0)
        out[..., ACTION_INDEX[neg]] = np.maximum(-values[..., k], 0.0)


def _merge_signed(actions, axes):
    """Signed values (..., 3) from the named pairs of actions (..., 13); numpy or torch."""
    cols = [actions[..., ACTION_INDEX[pos]] - actions[..., ACTION_INDEX[neg]] for pos, neg in axes]
    return torch.stack(cols, -1) if isinstance(actions, torch.Tensor) else np.stack(cols, -1)


def poses_to_actions(
    R: np.ndarray,
    P: np.ndarray,
    *,
    translation_eps: float = DEFAULT_TRANSLATION_EPS,
    rotation_eps_deg: float = DEFAULT_ROTATION_EPS_DEG,
    scale: float | None = None,
) -> tuple[np.ndarray, float]:
    """Annotate a camera trajectory with per-frame 13-DoF actions (RELIC Algorithm 1).

    RELIC arXiv 2512.04040 §3.3, Algorithm 1 (numbered steps below). Translation components
    (metres) with |value| <= translation_eps and rotation angles (degrees) with
    |value| <= rotation_eps_deg are zeroed; `static` = 1 exactly when all 12 motion entries are 0.
    Pass `scale` to normalise by a known d-bar (e.g. the whole episode's when annotating a
    re-ordered clip of it, as palindrome augmentation does) instead of this clip's own.

    Shapes:
        R: (T, 3, 3) world-to-camera rotations, float, orthonormal with det +1.
        P: (T, 3) camera centres in world metres.
        returns actions (T, 13) float32 (translation: ratio to d-bar; rotation: degrees per frame;
        static in {0, 1}) and scale d-bar (float, metres per frame): the mean norm of the non-zero
        camera-frame displacements, 1.0 if the camera never translates.
    Raises ValueError for wrong shapes, T = 0, NaN/inf, non-orthonormal R, negative eps or a
    non-positive scale.
    """
    R = check_rotations(R)
    P = np.asarray(P, dtype=np.float64)
    if R.ndim != 3 or P.ndim != 2 or P.shape[-1] != 3 or len(P) != len(R) or len(R) == 0:
        raise ValueError(f"expected R (T, 3, 3) and P (T, 3) with T >= 1, got {R.shape}, {P.shape}")
    if not np.isfinite(P).all():
        raise ValueError("P contains NaN or inf")
    if not (translation_eps >= 0 and rotation_eps_deg >= 0):
        raise ValueError("translation_eps and rotation_eps_deg must be >= 0")

    # Step 3: camera-frame displacement dP_t = R_t (P_{t+1} - P_t).
    dP = np.einsum("tij,tj->ti", R[:-1], P[1:] - P[:-1])  # (T-1, 3) right, down, forward
    dP[np.abs(dP) <= translation_eps] = 0.0
    # Step 4: d-bar = mean magnitude over the non-zero displacements.
    norms = np.linalg.norm(dP, axis=-1)  # (T-1,)
    if scale is None:
        scale = float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0
    elif not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    # Steps 15-16: dR_t = R_{t+1} R_t^T -> (yaw, pitch, roll) in degrees.
    dR = R[1:] @ np.swapaxes(R[:-1], -1, -2)  # (T-1, 3, 3)
    angles = np.degrees(np.stack(relative_euler(dR), axis=-1))  # (T-1, 3)
    angles[np.abs(angles) <= rotation_eps_deg] = 0.0

    # Steps 5-7 and 12-18: per-pair labels; Step 8: prepend the static action for frame 0.
    actions = np.zeros((len(R), NUM_ACTIONS), dtype=np.float64)  # (T, 13)
    _split_signed(dP / scale, TRANSLATION_AXES, actions[1:])
    _split_signed(angles, ROTATION_AXES, actions[1:])
    actions[:, STATIC_INDEX] = ~(actions[:, list(MOTION_INDICES)] > 0).any(axis=-1)
    return actions.astype(np.float32), scale


def _check_values(actions, gamma, R0, P0) -> None:
    """Validate values (for torch inputs this syncs with the device; skip with validate=False)."""
    if isinstance(actions, torch.Tensor):
        actions, gamma, R0, P0 = (
            x.detach().cpu().double().numpy() for x in (actions, gamma, R0, P0)
        )
    if not np.isfinite(actions).all():
        raise ValueError("actions contain NaN or inf")
    if not (np.isfinite(gamma).all() and (gamma >= 0).all()):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    check_rotations(R0, "R0")
    if not np.isfinite(P0).all():
        raise ValueError("P0 contains NaN or inf")


def actions_to_poses(actions, gamma, R0=None, P0=None, *, validate: bool = True):
    """Integrate 13-DoF actions into absolute camera poses (RELIC §4.1.2 pose integration).

    RELIC arXiv 2512.04040 §4.1.2: `P_{t+1} = P_t + R_t^T dP_t`, `R_{t+1} = dR_t R_t`, where
    `dP_t = gamma * (truck_right - truck_left, pedestal_down - pedestal_up, dolly_in - dolly_out)`
    (metres, camera frame) and `dR_t = relative_rotation(yaw, pitch, roll)` with
    yaw = pan_left - pan_right, pitch = tilt_up - tilt_down, roll = roll_cw - roll_ccw (degrees).
    Frame-aligned like `poses_to_actions`: `actions[t]` moves frame t-1 to t, `actions[0]` (the
    prepended static frame) is ignored, and the `static` entry never moves the camera. With
    `gamma` = the scale returned by `poses_to_actions`, this inverts it.

    Shapes:
        actions: (T, 13) or (B, T, 13); numpy (computed in float64) or torch (any float dtype).
        gamma: float metres per unit translation (>= 0), or per-batch (B,) array / tensor.
        R0: (3, 3) or (B, 3, 3) world-to-camera rotation of frame 0; default identity.
        P0: (3,) or (B, 3) camera centre of frame 0 in metres; default zero.
        returns R (..., T, 3, 3) and P (..., T, 3) with the leading dims of `actions`; numpy
        float64 for numpy input, torch tensors on the device/dtype of `actions` for torch input
        (differentiable with respect to actions, gamma, R0 and P0).
    Raises ValueError for wrong shapes, T = 0, non-float torch actions, NaN/inf, negative gamma or
    non-orthonormal R0. `validate=False` skips the value checks (they sync torch to the host).
    """
    if isinstance(actions, torch.Tensor):
        if not actions.is_floating_point():
            raise ValueError(f"torch actions must be floating point, got {actions.dtype}")
        kw = {"dtype": actions.dtype, "device": actions.device}
        R0 = torch.eye(3, **kw) if R0 is None else torch.as_tensor(R0, **kw)
        P0 = torch.zeros(3, **kw) if P0 is None else torch.as_tensor(P0, **kw)
        gamma = torch.as_tensor(gamma, **kw)
        stack, broadcast = torch.stack, torch.broadcast_to
    else:
        actions = np.asarray(actions, dtype=np.float64)
        R0 = np.eye(3) if R0 is None else np.asarray(R0, dtype=np.float64)
        P0 = np.zeros(3) if P0 is None else np.asarray(P0, dtype=np.float64)
        gamma = np.asarray(gamma, dtype=np.float64)
        stack, broadcast = np.stack, np.broadcast_to

    batched = actions.ndim == 3
    if actions.ndim not in (2, 3) or actions.shape[-1] != NUM_ACTIONS or actions.shape[-2] == 0:
        raise ValueError(
            f"actions must be (T, 13) or (B, T, 13) with T >= 1, got {tuple(actions.shape)}"
        )
    B = actions.shape[0] if batched else 1
    if R0.shape not in ((3, 3), (B, 3, 3)) or (not batched and R0.ndim != 2):
        raise ValueError(f"R0 must be (3, 3) or (B, 3, 3) with B = {B}, got {tuple(R0.shape)}")
    if P0.shape not in ((3,), (B, 3)) or (not batched and P0.ndim != 1):
        raise ValueError(f"P0 must be (3,) or (B, 3) with B = {B}, got {tuple(P0.shape)}")
    if gamma.shape not in ((), (B,)) or (not batched and gamma.ndim != 0):
        raise ValueError(f"gamma must be a scalar or (B,) with B = {B}, got {tuple(gamma.shape)}")
    if validate:
        _check_values(actions, gamma, R0, P0)

    a = actions if batched else actions[None]  # (B, T, 13)
    gamma = gamma.reshape(-1, 1, 1) if gamma.ndim else gamma  # (B, 1, 1) or ()
    dP = _merge_signed(a[:, 1:], TRANSLATION_AXES) * gamma  # (B, T-1, 3) metres, camera frame
    angles = _merge_signed(a[:, 1:], ROTATION_AXES) * (np.pi / 180.0)  # (B, T-1, 3) radians
    dR = relative_rotation(angles[..., 0], angles[..., 1], angles[..., 2])  # (B, T-1, 3, 3)

    Rs, Ps = [broadcast(R0, (B, 3, 3))], [broadcast(P0, (B, 3))]
    for t in range(dR.shape[1]):
        # P_{t+1} = P_t + R_t^T dP_t ; R_{t+1} = dR_t R_t
        Ps.append(Ps[-1] + (Rs[-1].swapaxes(-1, -2) @ dP[:, t, :, None])[..., 0])
        Rs.append(dR[:, t] @ Rs[-1])
    R, P = stack(Rs, 1), stack(Ps, 1)  # (B, T, 3, 3), (B, T, 3)
    return (R, P) if batched else (R[0], P[0])


def names_to_action(
    names: Iterable[str], *, translation: float = 1.0, rotation_deg: float = DEFAULT_ROTATION_DEG
) -> np.ndarray:
    """One action vector with the named entries active.

    Translation names get `translation` (ratio to gamma), rotation names get `rotation_deg`
    (degrees per frame); no names or just "static" gives the static action.

    Shapes: returns (13,) float32.
    Raises ValueError for unknown names, opposing names (e.g. dolly_in + dolly_out), "static"
    combined with motion, or non-positive / non-finite magnitudes.
    """
    names = set(names)
    if not (np.isfinite(translation) and translation > 0):
        raise ValueError(f"translation must be finite and > 0, got {translation}")
    if not (np.isfinite(rotation_deg) and rotation_deg > 0):
        raise ValueError(f"rotation_deg must be finite and > 0, got {rotation_deg}")
    unknown = sorted(names - set(ACTION_NAMES))
    if unknown:
        raise ValueError(f"unknown action name(s) {unknown}; valid: {', '.join(ACTION_NAMES)}")
    if "static" in names and len(names) > 1:
        raise ValueError(f"'static' cannot be combined with other actions: {sorted(names)}")
    opposing = sorted(n for n in names if n in OPPOSITE_ACTION and OPPOSITE_ACTION[n] in names)
    if opposing:
        raise ValueError(f"opposing actions cannot be combined: {' + '.join(opposing)}")
    action = np.zeros(NUM_ACTIONS, dtype=np.float32)
    for name in names - {"static"}:
        idx = ACTION_INDEX[name]
        action[idx] = translation if idx in TRANSLATION_INDICES else rotation_deg
    if not names - {"static"}:
        action[STATIC_INDEX] = 1.0
    return action


def active_action_names(action: np.ndarray) -> tuple[str, ...]:
    """Names of the entries > 0 of one action vector, in ACTION_NAMES order.

    Shapes: action (13,) -> tuple of names (empty for an all-zero vector).
    Raises ValueError if the shape is not (13,).
    """
    action = np.asarray(action)
    if action.shape != (NUM_ACTIONS,):
        raise ValueError(f"action must have shape ({NUM_ACTIONS},), got {action.shape}")
    return tuple(name for name, value in zip(ACTION_NAMES, action, strict=True) if value > 0)
