"""Sim(3)-aligned RPE (evo) and the probe's pose chaining."""

from __future__ import annotations

import numpy as np

from reverie.camera import R_from_yaw_pitch_roll
from reverie.evaluation.probe import chain_poses, relative_pose_targets
from reverie.evaluation.trajectory_error import mean_rpe, rpe


def _path(T: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yaw = np.cumsum(rng.normal(0, 0.1, T))
    pitch = 0.1 * np.sin(np.arange(T) / 5)
    R = R_from_yaw_pitch_roll(yaw, pitch, np.zeros(T))
    P = np.cumsum(rng.normal(0, 0.1, (T, 3)), axis=0)
    return R, P


def test_chain_inverts_relative_targets():
    R, P = _path()
    i = np.arange(len(P) - 1)
    Rc, Pc = chain_poses(relative_pose_targets(R, P, i, i + 1))
    np.testing.assert_allclose(Rc, R @ R[0].T, atol=1e-9)  # relative to frame 0
    np.testing.assert_allclose(Pc, (P - P[0]) @ R[0].T, atol=1e-9)


def test_rpe_is_invariant_to_a_similarity_transform():
    R, P = _path()
    Q = R_from_yaw_pitch_roll(np.array([0.7]), np.array([0.2]), np.array([0.1]))[0]
    # World frame changed by rotation Q, scale 3, offset: x' = 3 Q x + t.
    R2 = R @ Q.T
    P2 = 3.0 * P @ Q.T + np.array([1.0, -2.0, 5.0])
    r = rpe(R, P, R2, P2)
    assert r["trans_rmse"] < 1e-9 and r["rot_rmse"] < 1e-6
    np.testing.assert_allclose(r["scale"], 1 / 3)


def test_rpe_grows_with_noise_and_handles_a_still_estimate():
    R, P = _path()
    i = np.arange(len(P) - 1)
    rel = relative_pose_targets(R, P, i, i + 1)
    errors = []
    for sigma in (0.01, 0.05):
        noise = np.random.default_rng(1).normal(0, 1, rel.shape) * np.array([sigma] * 3 + [0] * 3)
        errors.append(rpe(R, P, *chain_poses(rel + noise))["trans_rmse"])
    assert 0 < errors[0] < errors[1]
    still = rpe(R, P, np.tile(np.eye(3), (len(P), 1, 1)), np.zeros_like(P))
    assert np.isnan(still["trans_rmse"])  # degenerate alignment: reported, not raised
    m = mean_rpe([still, rpe(R, P, R, P)])
    assert m["n"] == 1 and m["trans_rmse"] < 1e-9
