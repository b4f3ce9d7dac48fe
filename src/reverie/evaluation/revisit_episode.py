"""Revisit episodes of the MAG-Bench-style benchmark: find the event, split memorize/generate.

Steps 1-2 of :mod:`reverie.evaluation.revisit` (which documents the whole protocol): in a
held-out scene, sample ``revisit`` camera paths until one comes back to a place it left, then
render the ground truth and record which generated frames revisit which memorized ones.
Poses follow docs/conventions.md (world-to-camera ``R``, row 2 = optical axis; ``P`` metres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reverie.evaluation.heldout import (
    GroundTruthEpisode,
    heldout_scene_seed,
    heldout_trajectory_seed,
    render_heldout,
    sample_heldout_path,
)
from reverie.worlds.revisit import revisit_mask

# Revisit thresholds: the defaults of reverie.worlds.revisit.revisit_mask, passed explicitly.
POS_THRESH_M = 0.5
ANGLE_THRESH_DEG = 20.0
LEAVE_ANGLE_DEG = 90.0
LEAVE_DIST_M = 2.0


@dataclass(frozen=True, eq=False)
class RevisitEpisode:
    """One benchmark episode: ground truth, the memorize/generate split and the revisit frames.

    Attributes:
        gt: ground truth of frames ``0..end-1`` (see :class:`GroundTruthEpisode`).
        first_visit, leave, first_revisit: frames ``s0``, ``u0``, ``a`` of the protocol
            (:mod:`reverie.evaluation.revisit`).
        memorize_end: ``m``: frames ``0..m`` are memorized (``m % frames_per_step == 0``).
        end: frames ``m+1..end-1`` are generated (``(end - m - 1) % frames_per_step == 0``).

    Shapes:
        revisit_frames: ``(N,)`` int64 frame indices in ``(m, end)``.
        history_match: ``(N,)`` int64 memorized frame (``<= m``) with the closest pose.
        since_first_visit_s: ``(N,)`` float64 seconds since the first visit of that place.
    """

    gt: GroundTruthEpisode
    first_visit: int
    leave: int
    first_revisit: int
    memorize_end: int
    end: int
    revisit_frames: np.ndarray
    history_match: np.ndarray
    since_first_visit_s: np.ndarray

    def summary(self) -> dict:
        """JSON-serialisable description (no frames)."""
        g = self.gt
        return {
            "index": g.index,
            "scene_seed": g.scene_seed,
            "trajectory_seed": g.trajectory_seed,
            "scene_kind": g.scene_kind,
            "caption": g.caption,
            "action_scale": g.action_scale,
            "first_visit": self.first_visit,
            "leave": self.leave,
            "first_revisit": self.first_revisit,
            "memorize_end": self.memorize_end,
            "end": self.end,
            "memorized_frames": self.memorize_end + 1,
            "generated_frames": self.end - self.memorize_end - 1,
            "revisit_frames": len(self.revisit_frames),
            "since_first_visit_s": [
                float(self.since_first_visit_s.min()),
                float(self.since_first_visit_s.max()),
            ],
        }


def _optical_axes(R: np.ndarray) -> np.ndarray:
    """Unit optical axes (row 2 of world-to-camera R). Shapes: (T, 3, 3) -> (T, 3)."""
    axis = R[:, 2, :]
    return axis / np.linalg.norm(axis, axis=-1, keepdims=True)


def history_matches(
    R: np.ndarray, P: np.ndarray, frames: np.ndarray, memorize_end: int, min_gap: int
) -> np.ndarray:
    """Memorized frame with the closest pose to each of ``frames``.

    Closeness is ``|P_t - P_s| / POS_THRESH_M + angle(axis_t, axis_s) / ANGLE_THRESH_DEG`` over
    memorized frames ``s <= memorize_end`` with ``t - s >= min_gap`` (all memorized frames when
    none is that old).

    Shapes: R (T, 3, 3), P (T, 3) metres, frames (N,) int -> (N,) int64.
    """
    axes = _optical_axes(R)
    out = np.empty(len(frames), dtype=np.int64)
    for i, t in enumerate(frames):
        last = min(memorize_end, t - min_gap)
        cand = np.arange(0, (last if last >= 0 else memorize_end) + 1)
        cos = np.clip(axes[cand] @ axes[t], -1.0, 1.0)
        score = (
            np.linalg.norm(P[cand] - P[t], axis=-1) / POS_THRESH_M
            + np.degrees(np.arccos(cos)) / ANGLE_THRESH_DEG
        )
        out[i] = cand[int(np.argmin(score))]
    return out


def find_event(
    R: np.ndarray,
    P: np.ndarray,
    fps: int,
    frames_per_step: int,
    *,
    min_gap_s: float,
    min_revisit_frames: int,
    memorize_until: str = "leave",
) -> dict[str, int] | None:
    """The memorize/generate split of a camera path, or None if it has no usable revisit.

    Implements steps 1-3 of :mod:`reverie.evaluation.revisit`. Shapes: R (T, 3, 3), P (T, 3).
    ``memorize_until``: ``leave`` (the benchmark: memorize until the camera has left) or
    ``return`` (a diagnostic: memorize the whole path up to the last step before the first
    revisit, so that only the return leg is generated and every policy's context is ground
    truth: recall without the model's own output in between).
    Returns a dict with ``first_visit, leave, first_revisit, run_end, memorize_end, end``.

    Raises:
        ValueError: an unknown ``memorize_until``.
    """
    if memorize_until not in ("leave", "return"):
        raise ValueError(f"memorize_until must be 'leave' or 'return', got {memorize_until!r}")
    mask, gap = revisit_mask(
        R,
        P,
        fps,
        min_gap_s=min_gap_s,
        pos_thresh=POS_THRESH_M,
        angle_thresh_deg=ANGLE_THRESH_DEG,
        leave_angle_deg=LEAVE_ANGLE_DEG,
        leave_dist=LEAVE_DIST_M,
    )
    T = len(P)
    axes = _optical_axes(R)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for a, b in zip(starts, stops, strict=True):
        if b - a < min_revisit_frames:
            continue
        s0 = int(a - gap[a])
        cos = axes[s0 + 1 :] @ axes[s0]
        dist = np.linalg.norm(P[s0 + 1 :] - P[s0], axis=-1)
        left = (cos <= math.cos(math.radians(LEAVE_ANGLE_DEG))) | (dist >= LEAVE_DIST_M)
        if not left.any():  # cannot happen for a flagged revisit; kept as a guard
            continue
        u0 = s0 + 1 + int(np.argmax(left))
        m = frames_per_step * math.ceil(u0 / frames_per_step)
        if m >= a:
            continue  # the revisit starts inside the memorized part
        if memorize_until == "return":
            m = frames_per_step * ((int(a) - 1) // frames_per_step)  # the last step before a
        steps = math.ceil((b - m - 1) / frames_per_step)
        if m + 1 + frames_per_step * steps > T:
            steps = (T - m - 1) // frames_per_step
        end = m + 1 + frames_per_step * steps
        if min(b, end) - a < min_revisit_frames:
            continue
        return {
            "first_visit": s0,
            "leave": u0,
            "first_revisit": int(a),
            "run_end": int(b),
            "memorize_end": m,
            "end": end,
        }
    return None


def build_episode(
    index: int,
    *,
    family: str,
    seconds: float,
    min_gap_s: float,
    min_revisit_frames: int,
    max_attempts: int,
    fps: int,
    resolution: int,
    frames_per_step: int,
    memorize_until: str = "leave",
) -> RevisitEpisode:
    """Find a revisit path in held-out scene ``index`` and render its ground truth
    (``memorize_until`` as :func:`find_event`).

    Raises:
        ValueError: no trajectory seed out of ``max_attempts`` has a usable revisit.
    """
    for attempt in range(max_attempts):
        spec, traj = sample_heldout_path(index, family, seconds, fps, attempt)
        event = find_event(
            traj.R,
            traj.P,
            fps,
            frames_per_step,
            min_gap_s=min_gap_s,
            min_revisit_frames=min_revisit_frames,
            memorize_until=memorize_until,
        )
        if event is None:
            continue
        end, m = event["end"], event["memorize_end"]
        gt = render_heldout(
            index,
            spec,
            traj.R[:end],
            traj.P[:end],
            trajectory_seed=heldout_trajectory_seed(index, attempt),
            resolution=resolution,
            fps=fps,
        )
        mask, gap = revisit_mask(
            gt.R,
            gt.P,
            fps,
            min_gap_s=min_gap_s,
            pos_thresh=POS_THRESH_M,
            angle_thresh_deg=ANGLE_THRESH_DEG,
            leave_angle_deg=LEAVE_ANGLE_DEG,
            leave_dist=LEAVE_DIST_M,
        )
        t = np.arange(event["first_revisit"], min(event["run_end"], end))
        t = t[mask[t] & (t - gap[t] <= m)]  # revisits of a memorized place
        if len(t) < min_revisit_frames:
            continue
        min_gap = math.ceil(min_gap_s * fps)
        return RevisitEpisode(
            gt=gt,
            first_visit=event["first_visit"],
            leave=event["leave"],
            first_revisit=event["first_revisit"],
            memorize_end=m,
            end=end,
            revisit_frames=t.astype(np.int64),
            history_match=history_matches(gt.R, gt.P, t, m, min_gap),
            since_first_visit_s=gap[t].astype(np.float64) / fps,
        )
    raise ValueError(
        f"held-out scene {index} (seed {heldout_scene_seed(index)}) has no usable revisit in "
        f"{max_attempts} {family!r} trajectories of {seconds} s; "
        f"raise --seconds or --max-attempts"
    )
