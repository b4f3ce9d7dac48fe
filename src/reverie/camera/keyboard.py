"""Interactive keyboard controls -> one 13-DoF action per frame (RELIC arXiv 2512.04040 §4.1.2).

Keys are browser `KeyboardEvent.code` names, so the layout is position-based (WASD on AZERTY
keyboards too). Several keys may be held at once; opposing keys cancel; no keys means static.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from reverie.camera.actions import DEFAULT_ROTATION_DEG, OPPOSITE_ACTION, names_to_action

KEY_MAP: dict[str, str] = {
    "KeyW": "dolly_in",
    "KeyS": "dolly_out",
    "KeyA": "truck_left",
    "KeyD": "truck_right",
    "KeyR": "pedestal_up",
    "KeyF": "pedestal_down",
    "ArrowUp": "tilt_up",
    "ArrowDown": "tilt_down",
    "ArrowLeft": "pan_left",
    "ArrowRight": "pan_right",
    "KeyQ": "roll_ccw",
    "KeyE": "roll_cw",
}


def keys_to_action(
    keys: Iterable[str], *, translation: float = 1.0, rotation_deg: float = DEFAULT_ROTATION_DEG
) -> np.ndarray:
    """The action for the set of keys held during one frame.

    Translation keys give `translation` (ratio to the velocity coefficient gamma), rotation keys
    give `rotation_deg` degrees per frame. Opposing keys held together (W + S) cancel; with no
    active motion the result is the static action. A single string is taken as one key.

    Shapes: keys: iterable of `KeyboardEvent.code` strings -> (13,) float32 action.
    Raises ValueError naming an unknown key (and listing the valid ones), or for non-positive /
    non-finite magnitudes.
    """
    if isinstance(keys, str):
        keys = (keys,)
    names = set()
    for key in keys:
        if key not in KEY_MAP:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(KEY_MAP)}")
        names.add(KEY_MAP[key])
    names = {name for name in names if OPPOSITE_ACTION[name] not in names}  # opposing keys cancel
    return names_to_action(names, translation=translation, rotation_deg=rotation_deg)
