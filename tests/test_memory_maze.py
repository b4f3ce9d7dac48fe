"""Memory Maze episodes: shapes, pose conversion, policy-consistent action labels, determinism.

The env tests need the memorymaze extra (`pip install 'reverie[memorymaze]'`) and a headless GL
backend; they are skipped when memory_maze cannot be imported.
"""

import math
import sys

import numpy as np
import pytest

from reverie.camera import ACTION_INDEX, actions_to_poses, check_rotations
from reverie.worlds.memory_maze import (
    CAMERA_FORWARD_M,
    CAMERA_HEIGHT_M,
    CAMERA_PITCH_RAD,
    FORWARD,
    INSTALL_HINT,
    LEFT,
    RIGHT,
    agent_to_camera_pose,
    record_memory_maze,
)

FRAMES = 40
CONTROL_FREQ = 4.0  # coarse env steps: 40 frames hold both walks and on-the-spot turns
FOVY_DEG = 80.0  # the egocentric camera of dm_control's jumping ball walker


@pytest.fixture(scope="module")
def episode():
    pytest.importorskip("memory_maze")
    return record_memory_maze(seed=0, frames=FRAMES, control_freq=CONTROL_FREQ)


def test_agent_to_camera_pose_at_maze_centre():
    R, P = agent_to_camera_pose(np.array([4.5, 4.5]), np.array([0.0, 2.0]))  # heading +y
    assert np.allclose(P, [0.0, CAMERA_FORWARD_M, CAMERA_HEIGHT_M])
    c, s = math.cos(CAMERA_PITCH_RAD), math.sin(CAMERA_PITCH_RAD)
    assert np.allclose(R[2], [0.0, c, s])  # optical axis: +y, slightly down
    assert np.allclose(R[0], [1.0, 0.0, 0.0])  # camera right = world +x when facing +y
    check_rotations(R[None])
    with pytest.raises(ValueError):
        agent_to_camera_pose(np.array([1.0, 1.0]), np.zeros(2))


@pytest.mark.parametrize(
    "kwargs", [{"resolution": 96}, {"frames": 0}, {"control_freq": 16.0}, {"fps": 0}]
)
def test_invalid_arguments_raise_value_error(kwargs):
    args = {"seed": 0, "frames": 4, **kwargs}
    with pytest.raises(ValueError):
        record_memory_maze(**args)


def test_missing_extra_raises_import_error_with_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "memory_maze", None)  # makes `import memory_maze` fail
    with pytest.raises(ImportError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        record_memory_maze(seed=0, frames=4)


@pytest.mark.memorymaze
def test_episode_shapes_and_metadata(episode):
    ep = episode
    assert ep.frames.shape == (FRAMES, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.R.shape == (FRAMES, 3, 3) and ep.R.dtype == np.float64
    assert ep.P.shape == (FRAMES, 3) and ep.actions.shape == (FRAMES, 13)
    assert ep.actions.dtype == np.float32 and ep.actions[0, ACTION_INDEX["static"]] == 1
    check_rotations(ep.R, atol=1e-9)
    assert np.allclose(np.linalg.det(ep.R), 1.0)
    assert np.allclose(ep.P[:, 2], CAMERA_HEIGHT_M) and (np.abs(ep.P[:, :2]) < 9.0).all()
    f = 32 / math.tan(math.radians(FOVY_DEG / 2))
    assert np.allclose(ep.K, [[f, 0, 32], [0, f, 32], [0, 0, 1]])
    assert ep.trajectory == "memory-maze-explore" and "maze" in ep.caption
    assert ep.scene["world"] == "memory-maze" and ep.scene["seed"] == 0
    assert np.array(ep.scene["maze_layout"]).shape == (9, 9)
    assert ep.stats["env_steps"] == FRAMES - 1 and len(ep.stats["env_actions"]) == FRAMES - 1
    assert ep.stats["pose_check_max_err_m"] < 5e-3  # agent_pos/dir pose == MuJoCo's camera
    assert ep.frames.std() > 10  # an image, not a blank frame


@pytest.mark.memorymaze
def test_action_labels_follow_the_policy(episode):
    ep = episode
    env_actions = np.array(ep.stats["env_actions"])
    labels = ep.actions[1:]  # labels[t] = motion caused by env_actions[t]
    i = ACTION_INDEX
    fwd = labels[env_actions == FORWARD]
    assert len(fwd) >= 3
    others = fwd[
        :, [i["dolly_out"], i["truck_left"], i["truck_right"], i["pedestal_up"], i["pedestal_down"]]
    ].max(axis=1)
    assert np.mean(fwd[:, i["dolly_in"]] > 2 * others) >= 0.8  # forward -> dolly_in dominates
    for action, pan, opposite in (
        (LEFT, "pan_left", "pan_right"),
        (RIGHT, "pan_right", "pan_left"),
    ):
        turn = labels[env_actions == action]
        if len(turn):  # turning on the spot -> pan labels of several degrees per frame
            assert np.mean(turn[:, i[pan]] > 5.0) >= 0.8
            assert np.mean(turn[:, i[opposite]] > 0) <= 0.2
    assert np.isin(env_actions, (LEFT, RIGHT)).sum() >= 3
    # Labels integrate back to the recorded poses (RELIC §4.1.2).
    R, P = actions_to_poses(ep.actions, ep.action_scale, ep.R[0], ep.P[0])
    assert np.allclose(R, ep.R, atol=1e-4) and np.allclose(P, ep.P, atol=1e-3)


@pytest.mark.memorymaze
def test_same_seed_same_episode(episode):
    again = record_memory_maze(seed=0, frames=16, control_freq=CONTROL_FREQ)  # prefix of the same
    assert np.array_equal(again.frames, episode.frames[:16])
    assert np.array_equal(again.R, episode.R[:16]) and np.array_equal(again.P, episode.P[:16])
    assert again.stats["env_actions"] == episode.stats["env_actions"][:15]


@pytest.mark.memorymaze
def test_other_seed_and_resolution(episode):
    ep = record_memory_maze(seed=1, frames=1, resolution=128)
    assert ep.frames.shape == (1, 128, 128, 3)
    assert np.isclose(ep.K[0, 0], 64 / math.tan(math.radians(FOVY_DEG / 2)))
    assert ep.scene["maze_layout"] != episode.scene["maze_layout"]
