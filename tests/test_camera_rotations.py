"""Rotation helpers: elementary rotations, relative Euler angles, absolute camera orientation."""

import numpy as np
import pytest
import torch

from reverie.camera import (
    R_REFERENCE,
    R_from_yaw_pitch_roll,
    check_rotations,
    look_at,
    relative_euler,
    relative_rotation,
    rot_x,
    rot_y,
    rot_z,
    yaw_pitch_roll_from_R,
)

DEG = np.pi / 180


def _random_angles(rng, n, max_pitch_deg=89.0):
    yaw = rng.uniform(-np.pi, np.pi, n)
    pitch = rng.uniform(-max_pitch_deg, max_pitch_deg, n) * DEG
    roll = rng.uniform(-np.pi, np.pi, n)
    return yaw, pitch, roll


def test_elementary_rotations_are_right_handed_and_batched():
    a = np.array([[0.1, 0.2], [0.3, np.pi / 2]])
    for rot in (rot_x, rot_y, rot_z):
        R = rot(a)
        assert R.shape == (2, 2, 3, 3)
        check_rotations(R)
    quarter = np.pi / 2
    np.testing.assert_allclose(rot_x(quarter) @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(rot_y(quarter) @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(rot_z(quarter) @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    assert rot_z(0).dtype == np.float64  # integer input is promoted


def test_torch_rotations_match_numpy():
    rng = np.random.default_rng(0)
    yaw, pitch, roll = _random_angles(rng, 5)
    expected = relative_rotation(yaw, pitch, roll)
    got = relative_rotation(*(torch.tensor(x) for x in (yaw, pitch, roll)))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relative_euler_round_trip(seed):
    rng = np.random.default_rng(seed)
    yaw, pitch, roll = _random_angles(rng, 200)
    got = relative_euler(relative_rotation(yaw, pitch, roll))
    for g, e in zip(got, (yaw, pitch, roll), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-9)


def test_relative_euler_sign_conventions():
    forward = np.array([0.0, 0.0, 1.0])
    # Q = dR^T holds the new camera axes in the old camera frame.
    new_forward = lambda y, p, r: relative_rotation(y, p, r).T @ forward  # noqa: E731
    assert new_forward(0.1, 0, 0)[0] < 0  # yaw > 0: optical axis swings to camera -x (left)
    assert new_forward(0, 0.1, 0)[1] < 0  # pitch > 0: optical axis swings to camera -y (up)
    new_right = relative_rotation(0, 0, 0.1).T @ [1.0, 0, 0]
    assert new_right[1] > 0  # roll > 0: right axis turns toward down = clockwise for the viewer


def test_relative_euler_gimbal_lock_reconstructs():
    dR = relative_rotation(0.3, np.pi / 2, 0.2)
    yaw, pitch, roll = relative_euler(dR)
    assert yaw == 0 and np.isclose(pitch, np.pi / 2)
    np.testing.assert_allclose(relative_rotation(yaw, pitch, roll), dR, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_absolute_round_trip(seed):
    rng = np.random.default_rng(seed)
    yaw, pitch, roll = _random_angles(rng, 200)
    R = R_from_yaw_pitch_roll(yaw, pitch, roll)
    check_rotations(R)
    for g, e in zip(yaw_pitch_roll_from_R(R), (yaw, pitch, roll), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-9)


def test_absolute_semantics():
    np.testing.assert_allclose(R_from_yaw_pitch_roll(0, 0, 0), R_REFERENCE, atol=1e-15)
    R = R_from_yaw_pitch_roll(np.pi / 2, 0, 0)  # yaw 90 deg: looking along +y
    np.testing.assert_allclose(R[2], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(R[0], [1, 0, 0], atol=1e-15)  # right is +x
    np.testing.assert_allclose(R[1], [0, 0, -1], atol=1e-15)  # down is -z
    R = R_from_yaw_pitch_roll(0.4, 0.3, 0)
    forward = [np.cos(0.4) * np.cos(0.3), np.sin(0.4) * np.cos(0.3), np.sin(0.3)]
    np.testing.assert_allclose(R[2], forward, atol=1e-15)
    assert abs(R[0, 2]) < 1e-15  # zero roll keeps the horizon level
    R = R_from_yaw_pitch_roll(0, 0, 0.2)  # clockwise roll: right axis dips below the horizon
    assert R[0, 2] < 0
    # Absolute angles compose with relative ones: increasing yaw of a level camera = pan left.
    dR = R_from_yaw_pitch_roll(0.5, 0, 0) @ R_from_yaw_pitch_roll(0.3, 0, 0).T
    np.testing.assert_allclose(relative_euler(dR), (0.2, 0, 0), atol=1e-12)


def test_absolute_torch_matches_numpy():
    R = R_from_yaw_pitch_roll(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([0.3]))
    assert isinstance(R, torch.Tensor)
    np.testing.assert_allclose(R.numpy(), R_from_yaw_pitch_roll([0.1], [0.2], [0.3]), atol=1e-7)


def test_look_at_matches_yaw_pitch_roll():
    rng = np.random.default_rng(3)
    yaw, pitch, roll = _random_angles(rng, 50, max_pitch_deg=85)
    forward = np.stack(
        [np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], -1
    ) * rng.uniform(0.5, 3.0, (50, 1))
    np.testing.assert_allclose(
        look_at(forward, roll=roll), R_from_yaw_pitch_roll(yaw, pitch, roll), atol=1e-12
    )
    np.testing.assert_allclose(look_at([1.0, 0, 0]), R_REFERENCE, atol=1e-15)


def test_look_at_rejects_degenerate():
    with pytest.raises(ValueError, match="parallel"):
        look_at([0, 0, 2.0])
    with pytest.raises(ValueError, match="parallel"):
        look_at([1e-9, 0, -1.0])
    with pytest.raises(ValueError, match="non-zero"):
        look_at([0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        look_at([np.nan, 0, 1])


def test_check_rotations_errors():
    with pytest.raises(ValueError, match="shape"):
        check_rotations(np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        check_rotations(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="orthonormal"):
        check_rotations(2 * np.eye(3))
    with pytest.raises(ValueError, match="det"):
        check_rotations(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="orthonormal"):
        relative_euler(np.ones((3, 3)))
