"""Keyboard controls and the action-script grammar."""

import numpy as np
import pytest

from reverie.camera import (
    ACTION_INDEX,
    DEFAULT_ROTATION_DEG,
    KEY_MAP,
    NUM_ACTIONS,
    STATIC_INDEX,
    active_action_names,
    format_action_script,
    keys_to_action,
    parse_action_script,
)


def test_key_map_covers_every_motion_once():
    assert sorted(KEY_MAP.values()) == sorted(n for n in ACTION_INDEX if n != "static")
    assert KEY_MAP["KeyQ"] == "roll_ccw" and KEY_MAP["KeyE"] == "roll_cw"
    assert KEY_MAP["KeyR"] == "pedestal_up" and KEY_MAP["ArrowLeft"] == "pan_left"


def test_keys_to_action_combinations_and_magnitudes():
    action = keys_to_action(["KeyW", "KeyD", "ArrowLeft", "ArrowUp"], translation=0.5)
    assert action.shape == (NUM_ACTIONS,) and action.dtype == np.float32
    assert active_action_names(action) == ("dolly_in", "truck_right", "tilt_up", "pan_left")
    assert action[ACTION_INDEX["dolly_in"]] == 0.5
    assert action[ACTION_INDEX["pan_left"]] == DEFAULT_ROTATION_DEG == 2.0
    assert active_action_names(keys_to_action("KeyE", rotation_deg=5.0)) == ("roll_cw",)
    assert keys_to_action(["KeyE"], rotation_deg=5.0)[ACTION_INDEX["roll_cw"]] == 5.0


def test_keys_to_action_opposing_keys_cancel():
    assert active_action_names(keys_to_action(["KeyW", "KeyS"])) == ("static",)
    action = keys_to_action(["KeyW", "KeyS", "KeyA", "ArrowLeft", "ArrowRight", "KeyA"])
    assert active_action_names(action) == ("truck_left",)


def test_keys_to_action_no_keys_is_static():
    action = keys_to_action([])
    assert action[STATIC_INDEX] == 1 and action.sum() == 1


def test_keys_to_action_unknown_key():
    with pytest.raises(ValueError, match=r"unknown key 'KeyZ'.*KeyW"):
        keys_to_action(["KeyW", "KeyZ"])
    with pytest.raises(ValueError, match="translation"):
        keys_to_action(["KeyW"], translation=-1.0)


def test_parse_action_script_example():
    actions = parse_action_script("dolly_in*32 pan_left+tilt_up*16 static*8", rotation_deg=3.0)
    assert actions.shape == (56, NUM_ACTIONS) and actions.dtype == np.float32
    assert (actions[:32, ACTION_INDEX["dolly_in"]] == 1.0).all()
    assert actions[:32].sum() == 32
    assert (actions[32:48, ACTION_INDEX["pan_left"]] == 3.0).all()
    assert (actions[32:48, ACTION_INDEX["tilt_up"]] == 3.0).all()
    assert actions[32:48].sum() == 16 * 6.0
    assert (actions[48:, STATIC_INDEX] == 1).all() and actions[48:].sum() == 8
    assert parse_action_script("  truck_left*2\n roll_ccw*1 ", translation=0.25)[0, 2] == 0.25


def test_format_round_trip():
    script = "dolly_in*32 pan_left+dolly_in*3 pan_left+tilt_up*16 static*8 roll_cw*1"
    canonical = "dolly_in*32 dolly_in+pan_left*3 tilt_up+pan_left*16 static*8 roll_cw*1"
    actions = parse_action_script(script)
    assert format_action_script(actions) == canonical
    np.testing.assert_array_equal(parse_action_script(format_action_script(actions)), actions)
    assert format_action_script(np.zeros((3, NUM_ACTIONS))) == "static*3"
    with pytest.raises(ValueError, match="shape"):
        format_action_script(np.zeros((3, 12)))


@pytest.mark.parametrize(
    ("script", "match"),
    [
        ("", "empty action script"),
        ("   \n ", "empty action script"),
        ("dolly_in*4 pan_left", r"'pan_left'.*missing '\*FRAMES'"),
        ("dolly_in*", r"'dolly_in\*'.*missing frame count"),
        ("dolly_in*0", r"'dolly_in\*0'.*positive"),
        ("dolly_in*-3", r"'dolly_in\*-3'.*positive"),
        ("dolly_in*2.5", r"'dolly_in\*2.5'.*not an integer"),
        ("dolly_in*two", "not an integer"),
        ("dolly_in*2*3", r"more than one '\*'"),
        ("dolly_inn*4", r"'dolly_inn\*4'.*unknown action 'dolly_inn'; did you mean dolly_in"),
        ("Pan_Left*4", "did you mean pan_left"),
        ("zzz*4", r"unknown action 'zzz'; valid: dolly_in"),
        ("dolly_in+*4", "empty action name"),
        ("*4", "empty action name"),
        ("dolly_in+dolly_out*4", r"'dolly_in\+dolly_out\*4'.*opposing"),
        ("static+pan_left*4", r"'static\+pan_left\*4'.*static"),
    ],
)
def test_parse_action_script_errors(script, match):
    with pytest.raises(ValueError, match=match):
        parse_action_script(script)
