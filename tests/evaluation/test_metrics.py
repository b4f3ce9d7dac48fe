"""Per-frame PSNR / SSIM (reverie.evaluation.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from reverie.evaluation.metrics import (
    PSNR_CAP_DB,
    finite_mean,
    frame_psnr,
    frame_ssim,
    psnr_matrix,
)


def _video(t: int = 3, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, size=(t, h, w, 3), dtype=np.uint8)


def test_identical_frames_give_inf_psnr_and_unit_ssim():
    v = _video()
    assert np.all(np.isinf(frame_psnr(v, v)))
    np.testing.assert_array_equal(frame_ssim(v, v), np.ones(3))
    assert finite_mean(frame_psnr(v, v)) == PSNR_CAP_DB


def test_psnr_of_constant_offset_is_known():
    v = _video()
    for offset in (1, 5, 16):
        shifted = v + np.uint8(offset)  # values stay < 256: no wrap-around
        expected = 10 * np.log10(255.0**2 / offset**2)
        np.testing.assert_allclose(frame_psnr(v, shifted), expected, rtol=1e-12)
        np.testing.assert_allclose(frame_psnr(shifted, v), expected, rtol=1e-12)


def test_metrics_are_per_frame():
    v = _video(t=4)
    w = v.copy()
    w[2] = 255 - w[2]
    p = frame_psnr(v, w)
    s = frame_ssim(v, w)
    assert p.shape == s.shape == (4,)
    assert np.isinf(p[[0, 1, 3]]).all() and np.isfinite(p[2])
    assert s[2] < 0.5 and np.all(s[[0, 1, 3]] == 1.0)


def test_ssim_decreases_with_noise_and_accepts_single_frame():
    v = _video(t=1)[0]
    rng = np.random.default_rng(1)
    values = []
    for sigma in (2, 10, 40):
        noisy = np.clip(v + rng.normal(0, sigma, v.shape), 0, 255).astype(np.uint8)
        values.append(frame_ssim(v, noisy)[0])
    assert values[0] > values[1] > values[2]
    assert frame_psnr(v, v).shape == (1,)


def test_errors_on_bad_inputs():
    v = _video()
    with pytest.raises(ValueError, match="same shape"):
        frame_psnr(v, v[:2])
    with pytest.raises(ValueError, match="same shape"):
        frame_ssim(v, v[:, :32])
    with pytest.raises(ValueError, match="uint8"):
        frame_psnr(v.astype(np.float32), v.astype(np.float32))
    with pytest.raises(ValueError, match="odd"):
        frame_ssim(v, v, win_size=6)
    small = _video(h=5, w=5)
    with pytest.raises(ValueError, match="smaller"):
        frame_ssim(small, small)


def test_psnr_matrix_matches_frame_psnr():
    a, b = _video(t=3, seed=0), _video(t=5, seed=1)
    m = psnr_matrix(a, b)
    assert m.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            np.testing.assert_allclose(m[i, j], frame_psnr(a[i], b[j])[0])
    assert np.isinf(psnr_matrix(a, a)).diagonal().all()
