"""Action scripts for CLIs and logs: `"dolly_in*32 pan_left+tilt_up*16 static*8"`.

Grammar: whitespace-separated segments `NAME[+NAME...]*FRAMES`, where NAME is one of
`ACTION_NAMES` (RELIC arXiv 2512.04040 §4.1.2) and FRAMES a positive integer. A segment holds
its actions for FRAMES frames; `static` stands alone; opposing names may not share a segment.
"""

from __future__ import annotations

import difflib

import numpy as np

from reverie.camera.actions import (
    ACTION_NAMES,
    DEFAULT_ROTATION_DEG,
    NUM_ACTIONS,
    active_action_names,
    names_to_action,
)

SEGMENT_FORMAT = "NAME[+NAME...]*FRAMES"
EXAMPLE_SCRIPT = "dolly_in*32 pan_left+tilt_up*16 static*8"


def _segment_error(segment: str, message: str) -> ValueError:
    return ValueError(f"action script segment {segment!r}: {message}")


def _parse_segment(segment: str) -> tuple[list[str], int]:
    """Split one segment into its names and frame count; errors name the segment."""
    if segment.count("*") != 1:
        what = "missing '*FRAMES'" if "*" not in segment else "more than one '*'"
        raise _segment_error(segment, f"{what}; expected {SEGMENT_FORMAT}")
    names_text, frames_text = segment.split("*")
    if not frames_text:
        raise _segment_error(segment, f"missing frame count; expected {SEGMENT_FORMAT}")
    try:
        frames = int(frames_text)
    except ValueError:
        raise _segment_error(segment, f"frame count {frames_text!r} is not an integer") from None
    if frames <= 0:
        raise _segment_error(segment, f"frame count must be positive, got {frames}")
    names = names_text.split("+")
    for name in names:
        if not name:
            raise _segment_error(segment, f"empty action name; expected {SEGMENT_FORMAT}")
        if name not in ACTION_NAMES:
            close = difflib.get_close_matches(name.lower(), ACTION_NAMES, n=3)
            hint = (
                f"did you mean {' or '.join(close)}?"
                if close
                else f"valid: {', '.join(ACTION_NAMES)}"
            )
            raise _segment_error(segment, f"unknown action {name!r}; {hint}")
    return names, frames


def parse_action_script(
    script: str, *, translation: float = 1.0, rotation_deg: float = DEFAULT_ROTATION_DEG
) -> np.ndarray:
    """Parse an action script into per-frame actions.

    Translation names get `translation` (ratio to the velocity coefficient gamma), rotation names
    `rotation_deg` degrees per frame, `static` gets 1. The result holds only the scripted frames:
    prepend a static frame yourself if you need the frame-aligned layout with `actions[0]` static.

    Shapes: script str -> (N, 13) float32 with N the sum of the frame counts.
    Raises ValueError (naming the offending segment) for an empty script, a missing / zero /
    negative / non-integer frame count, an unknown action name (with close matches suggested),
    opposing names in one segment (dolly_in+dolly_out) or `static` combined with motion.
    """
    segments = script.split()
    if not segments:
        raise ValueError(f"empty action script; expected e.g. {EXAMPLE_SCRIPT!r}")
    blocks = []
    for segment in segments:
        names, frames = _parse_segment(segment)
        try:
            action = names_to_action(names, translation=translation, rotation_deg=rotation_deg)
        except ValueError as err:
            raise _segment_error(segment, str(err)) from None
        blocks.append(np.broadcast_to(action, (frames, NUM_ACTIONS)))
    return np.concatenate(blocks).astype(np.float32)  # (N, 13)


def format_action_script(actions: np.ndarray) -> str:
    """Compact script of an action array: run lengths over the sets of active (> 0) entries.

    Magnitudes are dropped, so `parse_action_script(format_action_script(a))` reproduces `a` only
    for unit translations and DEFAULT_ROTATION_DEG rotations. All-zero frames print as `static`.

    Shapes: actions (T, 13) numpy array (or anything np.asarray accepts), T >= 1 -> str.
    Raises ValueError for other shapes.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[-1] != NUM_ACTIONS or len(actions) == 0:
        raise ValueError(
            f"actions must have shape (T, {NUM_ACTIONS}) with T >= 1, got {actions.shape}"
        )
    segments: list[list] = []  # [label, frames]
    for action in actions:
        label = "+".join(active_action_names(action)) or "static"
        if segments and segments[-1][0] == label:
            segments[-1][1] += 1
        else:
            segments.append([label, 1])
    return " ".join(f"{label}*{frames}" for label, frames in segments)
