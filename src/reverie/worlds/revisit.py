"""How much a camera trajectory comes back to earlier viewpoints (RELIC arXiv 2512.04040 §3).

RELIC's training trajectories deliberately revisit places, so that a world model must recall
content it generated long ago. :func:`revisit_stats` measures this: frame ``t`` *revisits* an
earlier frame ``s`` when

1. ``t - s >= min_gap_s * fps``,
2. their camera centres are within ``pos_thresh`` metres and their optical axes within
   ``angle_thresh_deg`` degrees, and
3. the camera *left* the viewpoint of ``s`` in between: some frame ``u`` with ``s < u < t`` has
   its optical axis ``>= leave_angle_deg`` away from that of ``s`` or its centre
   ``>= leave_dist`` metres away (a camera that merely stood still does not revisit).

Poses follow ``docs/conventions.md``: world-to-camera ``R`` (rows = camera axes in world
coordinates, row 2 = optical axis), camera centres ``P`` in metres.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RevisitStats:
    """Summary of revisits in one trajectory.

    Attributes:
        revisit_fraction: fraction of frames that revisit an earlier frame, in [0, 1].
        num_revisit_events: number of maximal runs of consecutive revisiting frames.
        max_return_gap_s: largest ``(t - s) / fps`` over revisiting pairs (s, t), seconds;
            0 when there is no revisit.
        path_length_m: total distance travelled by the camera centre, metres.
        total_yaw_deg: total absolute change of heading (optical axis projected on the
            ground plane), degrees.
        num_frames: T.
    """

    revisit_fraction: float
    num_revisit_events: int
    max_return_gap_s: float
    path_length_m: float
    total_yaw_deg: float
    num_frames: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict of the fields (JSON-serialisable)."""
        return asdict(self)


def revisit_mask(
    R: np.ndarray,
    P: np.ndarray,
    fps: float,
    *,
    min_gap_s: float = 3.0,
    pos_thresh: float = 0.5,
    angle_thresh_deg: float = 20.0,
    leave_angle_deg: float = 90.0,
    leave_dist: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame revisit flags and return gaps (see the module docstring for the definition).

    Vectorised over all frame pairs: O(T^2) memory and time (T = 2000 takes well under 0.1 s).

    Shapes: R (T, 3, 3), P (T, 3) -> mask (T,) bool, gap (T,) int64 frames (the largest t - s
    over the earlier frames s that t revisits; 0 where mask is False).
    Raises ValueError on mismatched shapes, fps <= 0 or non-finite input.
    """
    R = np.asarray(R, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3) or P.shape != (len(R), 3):
        raise ValueError(f"expected R (T, 3, 3) and P (T, 3), got {R.shape} and {P.shape}")
    if not (fps > 0 and np.isfinite(R).all() and np.isfinite(P).all()):
        raise ValueError("fps must be > 0 and R, P finite")
    T = len(P)
    axis = R[:, 2, :] / np.linalg.norm(R[:, 2, :], axis=-1, keepdims=True)  # (T, 3) optical axes
    axis32, P32 = axis.astype(np.float32), (P - P.mean(axis=0)).astype(np.float32)
    cos = axis32 @ axis32.T  # (T, T) cosine between optical axes (float32 is plenty here)
    sq = np.sum(P32 * P32, axis=-1)
    dist2 = sq[:, None] + sq[None, :] - 2.0 * (P32 @ P32.T)  # (T, T) squared distances
    frames = np.arange(T)
    # Step 3: first frame u > s at which the camera has left the viewpoint of s (T if never).
    left = (cos <= math.cos(math.radians(leave_angle_deg))) | (dist2 >= leave_dist**2)
    left = np.triu(left, k=1)  # (T, T) row s, column u > s
    first_leave = np.where(left.any(axis=1), left.argmax(axis=1), T)  # (T,)
    # Steps 1-2: close in position and angle, at least min_gap frames later; and left between.
    close = (dist2 <= pos_thresh**2) & (cos >= math.cos(math.radians(angle_thresh_deg)))
    pairs = np.triu(close, k=max(math.ceil(min_gap_s * fps - 1e-9), 1))  # (T, T) s, t
    pairs &= frames[None, :] > first_leave[:, None]
    mask = pairs.any(axis=0)  # (T,) frame t revisits some s
    gap = np.where(mask, frames - pairs.argmax(axis=0), 0)  # t - (earliest s it revisits)
    return mask, gap.astype(np.int64)


def revisit_stats(
    R: np.ndarray,
    P: np.ndarray,
    fps: float,
    *,
    min_gap_s: float = 3.0,
    pos_thresh: float = 0.5,
    angle_thresh_deg: float = 20.0,
    leave_angle_deg: float = 90.0,
    leave_dist: float = 2.0,
) -> RevisitStats:
    """Revisit statistics of a camera trajectory (RELIC arXiv 2512.04040 §3).

    Args:
        R: world-to-camera rotations; row 2 is the optical axis.
        P: camera centres, metres.
        fps: frames per second.
        min_gap_s: smallest time between a frame and its revisit, seconds.
        pos_thresh, angle_thresh_deg: how close (metres, degrees) a revisit must come.
        leave_angle_deg, leave_dist: how far (degrees or metres) the camera must have left the
            viewpoint in between.

    Shapes: R (T, 3, 3), P (T, 3), T >= 1.
    Raises ValueError on mismatched shapes, T = 0, fps <= 0 or non-finite input.
    """
    if len(P) == 0:
        raise ValueError("revisit_stats needs at least one frame")
    mask, gap = revisit_mask(
        R,
        P,
        fps,
        min_gap_s=min_gap_s,
        pos_thresh=pos_thresh,
        angle_thresh_deg=angle_thresh_deg,
        leave_angle_deg=leave_angle_deg,
        leave_dist=leave_dist,
    )
    P = np.asarray(P, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    starts = mask & ~np.concatenate([[False], mask[:-1]])  # (T,) first frame of each run
    heading = np.arctan2(R[:, 2, 1], R[:, 2, 0])  # (T,) yaw of the optical axis
    turn = np.angle(np.exp(1j * np.diff(heading)))  # (T-1,) wrapped heading changes
    return RevisitStats(
        revisit_fraction=float(mask.mean()),
        num_revisit_events=int(starts.sum()),
        max_return_gap_s=float(gap.max() / fps),
        path_length_m=float(np.linalg.norm(np.diff(P, axis=0), axis=-1).sum()),
        total_yaw_deg=float(np.degrees(np.abs(turn).sum())),
        num_frames=len(P),
    )
