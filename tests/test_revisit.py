"""revisit_stats on synthetic camera paths with known answers."""

import time

import numpy as np
import pytest

from reverie.camera import R_from_yaw_pitch_roll
from reverie.worlds.revisit import RevisitStats, revisit_mask, revisit_stats

FPS = 16


def _path(yaw_deg, xy=None):
    """Level camera with heading yaw_deg (T,) at xy (T, 2) (origin if None), height 1.5 m."""
    yaw = np.radians(np.asarray(yaw_deg, dtype=np.float64))
    P = np.zeros((len(yaw), 3))
    P[:, 2] = 1.5
    if xy is not None:
        P[:, :2] = xy
    return R_from_yaw_pitch_roll(yaw, np.zeros_like(yaw), np.zeros_like(yaw)), P


def test_static_camera_never_revisits():
    R, P = _path(np.zeros(200))
    st = revisit_stats(R, P, FPS)
    assert st.revisit_fraction == 0.0 and st.num_revisit_events == 0
    assert st.max_return_gap_s == 0.0 and st.path_length_m == 0.0 and st.total_yaw_deg == 0.0


def test_turn_around_and_back_revisits():
    # 2 s looking at 0 deg, 3 s turning to 180, 1 s there, 3 s back, 3 s looking at 0 again.
    yaw = np.concatenate(
        [
            np.zeros(32),
            np.linspace(0, 180, 48),
            np.full(16, 180.0),
            np.linspace(180, 0, 48),
            np.zeros(48),
        ]
    )
    R, P = _path(yaw)
    mask, gap = revisit_mask(R, P, FPS)
    st = revisit_stats(R, P, FPS)
    assert st.num_revisit_events == 1
    first = np.argmax(mask)
    assert mask[first:].all() and not mask[:first].any()  # one run, on the way back
    # The first revisit matches a frame of the way out that was left by >= 90 degrees (yaw
    # <= 90) to within 20 degrees: it happens on the way back at yaw <= 110.
    assert first >= 32 + 48 + 16 and yaw[first] <= 110.0
    np.testing.assert_allclose(st.revisit_fraction, mask.mean())
    np.testing.assert_allclose(st.max_return_gap_s, (len(yaw) - 1) / FPS)  # last vs first frame
    np.testing.assert_allclose(st.total_yaw_deg, 360.0, atol=1e-6)
    assert gap[first] >= 3 * FPS


def test_turning_back_too_soon_or_not_far_enough_is_no_revisit():
    quick = np.concatenate(
        [np.zeros(8), np.linspace(0, 120, 8), np.linspace(120, 0, 8), np.zeros(8)]
    )  # back within 2 s < min_gap
    assert revisit_stats(*_path(quick), FPS).revisit_fraction == 0.0
    glance = np.concatenate(
        [np.zeros(32), np.linspace(0, 60, 32), np.linspace(60, 0, 32), np.zeros(64)]
    )  # 60 deg < leave_angle
    assert revisit_stats(*_path(glance), FPS).revisit_fraction == 0.0


def test_straight_line_never_revisits():
    T = 320
    xy = np.stack([np.linspace(0, 20, T), np.zeros(T)], -1)
    st = revisit_stats(*_path(np.zeros(T), xy), FPS)
    assert st.revisit_fraction == 0.0 and st.num_revisit_events == 0
    np.testing.assert_allclose(st.path_length_m, 20.0)


def test_walk_away_and_come_back_revisits():
    # Stand at the origin 1 s, walk 3 m along +x and back (same heading: a dolly out and in).
    x = np.concatenate([np.zeros(16), np.linspace(0, 3, 48), np.linspace(3, 0, 48), np.zeros(32)])
    xy = np.stack([x, np.zeros_like(x)], -1)
    st = revisit_stats(*_path(np.zeros(len(x)), xy), FPS)
    assert st.num_revisit_events == 1 and st.revisit_fraction > 0.2
    np.testing.assert_allclose(st.path_length_m, 6.0)
    stricter = revisit_stats(*_path(np.zeros(len(x)), xy), FPS, leave_dist=4.0)
    assert stricter.revisit_fraction == 0.0


def test_to_dict_validation_and_speed():
    R, P = _path(np.linspace(0, 720, 2000))
    t0 = time.perf_counter()
    st = revisit_stats(R, P, FPS)
    assert time.perf_counter() - t0 < 1.0
    d = st.to_dict()
    assert isinstance(st, RevisitStats) and d["num_frames"] == 2000
    assert set(d) == {
        "revisit_fraction",
        "num_revisit_events",
        "max_return_gap_s",
        "path_length_m",
        "total_yaw_deg",
        "num_frames",
    }
    with pytest.raises(ValueError, match="expected R"):
        revisit_stats(R[:10], P, FPS)
    with pytest.raises(ValueError, match="fps"):
        revisit_stats(R, P, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        revisit_stats(R[:0], P[:0], FPS)
