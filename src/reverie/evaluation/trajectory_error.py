"""Relative pose error after Sim(3) Umeyama alignment, via evo (RELIC arXiv 2512.04040 §5.3).

RELIC's action accuracy: the camera trajectory recovered from a generated video is aligned to
the commanded ("canonical ground-truth") trajectory with a Sim(3) Umeyama alignment (Umeyama
1991; removes the global frame and the monocular scale), then the relative pose error (RPE)
is measured in translation and rotation. We use ``evo`` (Grupp 2017): ``PoseTrajectory3D``,
``align(correct_scale=True)`` and ``metrics.RPE`` with ``delta = 1`` pose (consecutive samples,
``stride`` video frames apart) and ``all_pairs = False``.

Units: translation RPE in metres of the reference trajectory; rotation RPE in degrees.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _to_evo(R: np.ndarray, P: np.ndarray):
    """World-to-camera ``R (T, 3, 3)`` and centres ``P (T, 3)`` -> evo camera-to-world SE(3)."""
    from evo.core.trajectory import PoseTrajectory3D

    T = np.tile(np.eye(4), (len(P), 1, 1))  # (T, 4, 4)
    T[:, :3, :3] = np.transpose(R, (0, 2, 1))
    T[:, :3, 3] = P
    return PoseTrajectory3D(poses_se3=list(T), timestamps=np.arange(len(P), dtype=np.float64))


def rpe(
    ref_R: np.ndarray, ref_P: np.ndarray, est_R: np.ndarray, est_P: np.ndarray
) -> dict[str, float]:
    """Sim(3)-aligned RPE of an estimated trajectory against a reference.

    Shapes: ref_R, est_R ``(K, 3, 3)`` world-to-camera; ref_P, est_P ``(K, 3)``; ``K >= 3``
    poses sampled at the same times.

    Returns:
        ``trans_rmse, trans_mean`` (metres of the reference), ``rot_rmse, rot_mean`` (degrees)
        and ``scale`` (the Sim(3) scale applied to the estimate). NaNs when the alignment is
        degenerate (e.g. an estimate that does not move).

    Raises:
        ValueError: mismatched or too short trajectories.
    """
    from evo.core import metrics
    from evo.core.geometry import GeometryException
    from evo.core.units import Unit

    if ref_P.shape != est_P.shape or ref_R.shape != est_R.shape or len(ref_P) < 3:
        raise ValueError(
            f"need matching trajectories of >= 3 poses, got {ref_P.shape} and {est_P.shape}"
        )
    ref, est = _to_evo(ref_R, ref_P), _to_evo(est_R, est_P)
    nan = dict.fromkeys(("trans_rmse", "trans_mean", "rot_rmse", "rot_mean", "scale"), np.nan)
    with np.errstate(all="ignore"):
        try:
            _, _, scale = est.align(ref, correct_scale=True)
        except (GeometryException, np.linalg.LinAlgError, ValueError) as e:
            log.warning("Sim(3) alignment failed: %s", e)
            return nan
    if not np.isfinite(scale) or scale <= 0:
        return nan
    out = {"scale": float(scale)}
    for key, rel in (
        ("trans", metrics.PoseRelation.translation_part),
        ("rot", metrics.PoseRelation.rotation_angle_deg),
    ):
        m = metrics.RPE(rel, delta=1, delta_unit=Unit.frames, all_pairs=False)
        m.process_data((ref, est))
        out[f"{key}_rmse"] = float(m.get_statistic(metrics.StatisticsType.rmse))
        out[f"{key}_mean"] = float(m.get_statistic(metrics.StatisticsType.mean))
    return out


def mean_rpe(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each RPE field over trajectories (NaN rows ignored; ``n`` counts used rows)."""
    keys = ("trans_rmse", "trans_mean", "rot_rmse", "rot_mean")
    ok = [r for r in rows if np.isfinite(r["trans_rmse"])]
    out = {k: float(np.mean([r[k] for r in ok])) if ok else float("nan") for k in keys}
    out["n"] = len(ok)
    return out
