"""RELIC 13-DoF actions: poses -> actions (Algorithm 1) and actions -> poses (§4.1.2)."""

import numpy as np
import pytest
import torch

from reverie.camera import (
    ACTION_INDEX,
    ACTION_NAMES,
    NUM_ACTIONS,
    STATIC_INDEX,
    TRANSLATION_INDICES,
    R_from_yaw_pitch_roll,
    actions_to_poses,
    active_action_names,
    names_to_action,
    poses_to_actions,
    relative_rotation,
)


def smooth_trajectory(seed, T=65, stationary=(), translate=True, rotate=True):
    """Random smooth 6-DoF camera path: sums of sinusoids evaluated on a warped clock.

    `stationary` lists frame ranges [a, b) over which the clock stops, so frames a..b hold one pose.
    """
    rng = np.random.default_rng(seed)
    speed = np.ones(T - 1)
    for a, b in stationary:
        speed[a : b - 1] = 0.0
    s = np.concatenate([[0.0], np.cumsum(speed)]) / T  # (T,) in [0, 1)

    def signal(amplitude):
        freq, phase = rng.uniform(0.3, 2.0, 3), rng.uniform(0, 2 * np.pi, 3)
        amp = rng.normal(size=3) * amplitude / 3
        return (amp * np.sin(2 * np.pi * freq * s[:, None] + phase)).sum(-1)

    P = np.stack([signal(3.0) for _ in range(3)], -1) + rng.normal(size=3)
    if not translate:
        P = np.broadcast_to(P[0], P.shape).copy()
    yaw, pitch, roll = signal(2.0), 0.6 * np.tanh(signal(1.5)), signal(0.5)
    if not rotate:
        yaw, pitch, roll = (np.full(T, x[0]) for x in (yaw, pitch, roll))
    return R_from_yaw_pitch_roll(yaw, pitch, roll), P


CASES = {
    "seed0": {"seed": 0},
    "seed1": {"seed": 1},
    "seed2-stationary": {"seed": 2, "stationary": [(10, 20), (40, 45)]},
    "seed3-pure-rotation": {"seed": 3, "translate": False},
    "seed4-pure-translation": {"seed": 4, "rotate": False},
    "seed5-long": {"seed": 5, "T": 257, "stationary": [(0, 8)]},
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_poses_actions_poses_round_trip(case):
    R, P = smooth_trajectory(**case)
    actions, scale = poses_to_actions(R, P)
    assert actions.shape == (len(R), NUM_ACTIONS) and actions.dtype == np.float32
    assert active_action_names(actions[0]) == ("static",)
    assert (actions >= 0).all()
    R2, P2 = actions_to_poses(actions, scale, R0=R[0], P0=P[0])
    np.testing.assert_allclose(R2, R, atol=1e-5)
    np.testing.assert_allclose(P2, P, atol=1e-5)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_scale_is_mean_nonzero_displacement(case):
    R, P = smooth_trajectory(**case)
    _, scale = poses_to_actions(R, P)
    steps = np.linalg.norm(np.diff(P, axis=0), axis=-1)  # rotation preserves the norm
    expected = steps[steps > 1e-9].mean() if (steps > 1e-9).any() else 1.0
    assert scale == pytest.approx(expected, rel=1e-9)


def test_stationary_frames_are_static_only():
    R, P = smooth_trajectory(seed=2, stationary=[(10, 20)])
    actions, _ = poses_to_actions(R, P)
    static = actions[:, STATIC_INDEX] == 1
    assert static[11:20].all() and static[0]
    assert not static[1:10].any() and not static[21:].any()
    assert (actions[static][:, :STATIC_INDEX] == 0).all()
    assert (actions[~static][:, STATIC_INDEX] == 0).all()


def test_pure_rotation_has_unit_scale_and_no_translation():
    R, P = smooth_trajectory(seed=3, translate=False)
    actions, scale = poses_to_actions(R, P)
    assert scale == 1.0
    assert (actions[:, list(TRANSLATION_INDICES)] == 0).all()


def random_actions(rng, T):
    """Frame-aligned actions with at most one entry of each opposing pair active."""
    actions = np.zeros((T, NUM_ACTIONS), dtype=np.float32)
    for t in range(1, T):
        for pair in range(6):
            choice = rng.integers(0, 3)  # 0: inactive, 1: positive name, 2: negative name
            if choice and rng.random() < 0.7:
                high = 2.0 if pair < 3 else 8.0  # translation ratio / degrees per frame
                actions[t, 2 * pair + choice - 1] = rng.uniform(0.2, high)
    actions[:, STATIC_INDEX] = (actions[:, :STATIC_INDEX] == 0).all(-1)
    return actions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_actions_poses_actions_round_trip(seed):
    rng = np.random.default_rng(seed)
    actions = random_actions(rng, 97)
    gamma = 0.37
    R, P = actions_to_poses(actions, gamma, R0=R_from_yaw_pitch_roll(0.3, -0.2, 0.1))
    actions2, scale = poses_to_actions(R, P)
    trans = list(TRANSLATION_INDICES)
    np.testing.assert_allclose(actions2[:, trans] * scale, actions[:, trans] * gamma, atol=1e-5)
    np.testing.assert_allclose(actions2[:, 6:], actions[:, 6:], atol=1e-4)


def _labels(R, P):
    actions, scale = poses_to_actions(R, P)
    assert active_action_names(actions[0]) == ("static",)
    return [active_action_names(a) for a in actions[1:]], actions, scale


@pytest.mark.parametrize(
    ("axis", "sign", "name"),
    [(2, 1, "dolly_in"), (2, -1, "dolly_out"), (0, 1, "truck_right"), (0, -1, "truck_left")],
)
def test_translation_labels(axis, sign, name):
    R = np.broadcast_to(R_from_yaw_pitch_roll(0.7, 0.3, -0.2), (6, 3, 3))  # any orientation
    P = np.arange(6)[:, None] * 0.25 * sign * R[0, axis]  # move along a camera axis
    labels, actions, scale = _labels(R, P)
    assert labels == [(name,)] * 5
    np.testing.assert_allclose(actions[1:, ACTION_INDEX[name]], 1.0, rtol=1e-6)
    assert scale == pytest.approx(0.25)


@pytest.mark.parametrize(("dz", "name"), [(0.1, "pedestal_up"), (-0.1, "pedestal_down")])
def test_world_vertical_motion_of_level_camera_is_pedestal(dz, name):
    R = np.broadcast_to(R_from_yaw_pitch_roll(1.1, 0.0, 0.0), (5, 3, 3))
    P = np.arange(5)[:, None] * np.array([0.0, 0.0, dz])
    labels, _, _ = _labels(R, P)
    assert labels == [(name,)] * 4


@pytest.mark.parametrize(
    ("angle", "sign", "name"),
    [
        ("yaw", 1, "pan_left"),
        ("yaw", -1, "pan_right"),
        ("pitch", 1, "tilt_up"),
        ("pitch", -1, "tilt_down"),
        ("roll", 1, "roll_cw"),
        ("roll", -1, "roll_ccw"),
    ],
)
def test_rotation_labels(angle, sign, name):
    # Level camera; yaw turns counter-clockwise about world +z seen from above for sign = +1.
    step = sign * np.radians(3.0) * np.arange(6)
    kwargs = {"yaw": 0.4 + 0 * step, "pitch": 0 * step, "roll": 0 * step}
    kwargs[angle] = kwargs[angle] + step
    R = R_from_yaw_pitch_roll(**kwargs)
    P = np.ones((6, 3))
    labels, actions, scale = _labels(R, P)
    assert labels == [(name,)] * 5
    np.testing.assert_allclose(actions[1:, ACTION_INDEX[name]], 3.0, rtol=1e-6)
    assert scale == 1.0


def test_no_motion_is_static_only():
    R = np.broadcast_to(np.eye(3), (4, 3, 3))
    labels, actions, scale = _labels(R, np.zeros((4, 3)))
    assert labels == [("static",)] * 3 and scale == 1.0
    assert (actions[:, STATIC_INDEX] == 1).all()
    actions1, _ = poses_to_actions(np.eye(3)[None], np.zeros((1, 3)))  # single frame
    assert active_action_names(actions1[0]) == ("static",)


def test_motion_below_eps_is_static():
    R = relative_rotation(np.array([0.0, 1e-8]), 0.0, 0.0)  # 6e-7 deg, below rotation_eps_deg
    actions, _ = poses_to_actions(R, np.array([[0, 0, 0], [1e-8, 0, 0]]))
    assert active_action_names(actions[1]) == ("static",)
    actions, _ = poses_to_actions(R, np.array([[0, 0, 0], [1e-8, 0, 0]]), rotation_eps_deg=0.0)
    assert active_action_names(actions[1]) == ("pan_left",)


def test_torch_matches_numpy_and_keeps_dtype():
    rng = np.random.default_rng(7)
    actions = random_actions(rng, 33)
    R0, P0 = R_from_yaw_pitch_roll(0.2, 0.1, -0.3), np.array([1.0, -2.0, 0.5])
    R_np, P_np = actions_to_poses(actions, 0.5, R0=R0, P0=P0)
    for dtype, atol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        R_t, P_t = actions_to_poses(torch.tensor(actions, dtype=dtype), 0.5, R0=R0, P0=P0)
        assert R_t.dtype == dtype and P_t.dtype == dtype
        assert R_t.shape == (33, 3, 3) and P_t.shape == (33, 3)
        np.testing.assert_allclose(R_t.numpy(), R_np, atol=atol)
        np.testing.assert_allclose(P_t.numpy(), P_np, atol=atol)


def test_batched_torch_with_per_batch_gamma_and_start_pose():
    rng = np.random.default_rng(8)
    actions = np.stack([random_actions(rng, 17) for _ in range(3)])  # (3, 17, 13)
    gamma = np.array([0.1, 1.0, 2.5])
    R0 = R_from_yaw_pitch_roll(rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3))
    P0 = rng.normal(size=(3, 3))
    a_t = torch.tensor(actions, dtype=torch.float64, requires_grad=True)
    R_t, P_t = actions_to_poses(a_t, torch.tensor(gamma), R0=torch.tensor(R0), P0=torch.tensor(P0))
    assert R_t.shape == (3, 17, 3, 3) and P_t.shape == (3, 17, 3)
    P_t.sum().backward()
    assert a_t.grad is not None and torch.isfinite(a_t.grad).all()
    R_np, P_np = actions_to_poses(actions, gamma, R0=R0, P0=P0)
    np.testing.assert_allclose(R_t.detach().numpy(), R_np, atol=1e-12)
    for b in range(3):
        R_b, P_b = actions_to_poses(actions[b], gamma[b], R0=R0[b], P0=P0[b])
        np.testing.assert_allclose(R_np[b], R_b, atol=1e-12)
        np.testing.assert_allclose(P_np[b], P_b, atol=1e-12)
        np.testing.assert_allclose(P_t[b].detach().numpy(), P_b, atol=1e-12)


def test_defaults_first_frame_and_static_entry_are_ignored():
    actions = np.zeros((3, NUM_ACTIONS), dtype=np.float32)
    actions[0] = names_to_action(["dolly_in", "pan_left"])  # frame 0 carries no motion
    actions[1:, STATIC_INDEX] = 5.0  # the static entry never moves the camera
    R, P = actions_to_poses(actions, 1.0)
    np.testing.assert_allclose(R, np.broadcast_to(np.eye(3), (3, 3, 3)))
    np.testing.assert_allclose(P, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"R": np.eye(3)[None].repeat(3, 0), "P": np.zeros((2, 3))}, "expected R"),
        ({"R": np.zeros((0, 3, 3)), "P": np.zeros((0, 3))}, "T >= 1"),
        ({"R": np.eye(3)[None].repeat(2, 0), "P": np.array([[0, 0, 0], [np.nan, 0, 0]])}, "NaN"),
        ({"R": np.full((2, 3, 3), np.inf), "P": np.zeros((2, 3))}, "NaN"),
        ({"R": 1.1 * np.eye(3)[None].repeat(2, 0), "P": np.zeros((2, 3))}, "orthonormal"),
        ({"R": np.eye(3)[None].repeat(2, 0), "P": np.zeros((2, 4))}, "expected R"),
    ],
)
def test_poses_to_actions_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        poses_to_actions(**kwargs)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(
    ("actions", "kwargs", "match"),
    [
        (np.zeros((4, 12)), {}, "actions must be"),
        (np.zeros((2, 3, 4, 13)), {}, "actions must be"),
        (np.zeros((0, 13)), {}, "T >= 1"),
        (np.full((2, 13), np.nan), {}, "NaN"),
        (np.zeros((2, 13)), {"gamma": -1.0}, "gamma"),
        (np.zeros((2, 13)), {"gamma": np.inf}, "gamma"),
        (np.zeros((2, 13)), {"gamma": np.ones(2)}, "gamma"),
        (np.zeros((2, 2, 13)), {"gamma": np.ones(3)}, "gamma"),
        (np.zeros((2, 13)), {"R0": 2 * np.eye(3)}, "orthonormal"),
        (np.zeros((2, 13)), {"R0": np.eye(3)[None]}, "R0 must be"),
        (np.zeros((2, 2, 13)), {"R0": np.eye(3)[None].repeat(3, 0)}, "R0 must be"),
        (np.zeros((2, 13)), {"P0": np.zeros(2)}, "P0 must be"),
        (np.zeros((2, 13)), {"P0": np.array([0, np.nan, 0])}, "P0"),
    ],
)
def test_actions_to_poses_rejects_bad_input(backend, actions, kwargs, match):
    kwargs = {"gamma": 1.0, **kwargs}
    if backend == "torch":
        actions = torch.tensor(actions)
        kwargs = {k: torch.as_tensor(v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        actions_to_poses(actions, **kwargs)


def test_torch_integer_actions_rejected():
    with pytest.raises(ValueError, match="floating"):
        actions_to_poses(torch.zeros(2, 13, dtype=torch.int64), 1.0)


def test_names_to_action_and_active_names():
    action = names_to_action(["dolly_in", "pan_left"], translation=0.5, rotation_deg=4.0)
    assert action[ACTION_INDEX["dolly_in"]] == 0.5 and action[ACTION_INDEX["pan_left"]] == 4.0
    assert active_action_names(action) == ("dolly_in", "pan_left")
    assert active_action_names(names_to_action([])) == ("static",)
    assert len(ACTION_NAMES) == NUM_ACTIONS == 13
    for names, match in [
        (["dolly_in", "dolly_out"], "opposing"),
        (["static", "pan_left"], "static"),
        (["zoom"], "unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            names_to_action(names)
    with pytest.raises(ValueError, match="translation"):
        names_to_action(["dolly_in"], translation=0.0)
    with pytest.raises(ValueError, match="shape"):
        active_action_names(np.zeros(12))
