"""Camera poses and the 13-DoF RELIC action space (arXiv 2512.04040 §3.3, §4.1.2).

Conventions: docs/conventions.md (world-to-camera R, camera centres P, OpenCV camera axes).
"""

from reverie.camera.actions import (
    ACTION_INDEX,
    ACTION_NAMES,
    DEFAULT_ROTATION_DEG,
    DEFAULT_ROTATION_EPS_DEG,
    DEFAULT_TRANSLATION_EPS,
    MOTION_INDICES,
    NUM_ACTIONS,
    OPPOSITE_ACTION,
    ROTATION_AXES,
    ROTATION_INDICES,
    STATIC_INDEX,
    TRANSLATION_AXES,
    TRANSLATION_INDICES,
    actions_to_poses,
    active_action_names,
    names_to_action,
    poses_to_actions,
)
from reverie.camera.keyboard import KEY_MAP, keys_to_action
from reverie.camera.rotations import (
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
from reverie.camera.script import format_action_script, parse_action_script

__all__ = [
    "ACTION_INDEX",
    "ACTION_NAMES",
    "DEFAULT_ROTATION_DEG",
    "DEFAULT_ROTATION_EPS_DEG",
    "DEFAULT_TRANSLATION_EPS",
    "KEY_MAP",
    "MOTION_INDICES",
    "NUM_ACTIONS",
    "OPPOSITE_ACTION",
    "ROTATION_AXES",
    "ROTATION_INDICES",
    "R_REFERENCE",
    "R_from_yaw_pitch_roll",
    "STATIC_INDEX",
    "TRANSLATION_AXES",
    "TRANSLATION_INDICES",
    "actions_to_poses",
    "active_action_names",
    "check_rotations",
    "format_action_script",
    "keys_to_action",
    "look_at",
    "names_to_action",
    "parse_action_script",
    "poses_to_actions",
    "relative_euler",
    "relative_rotation",
    "rot_x",
    "rot_y",
    "rot_z",
    "yaw_pitch_roll_from_R",
]
