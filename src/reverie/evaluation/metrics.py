"""Per-frame image metrics for generated videos: PSNR and SSIM (MAG §4.1, MAG-Bench).

Both functions compare two uint8 RGB videos frame by frame and return one number per frame, so
callers can average over a segment, plot against time, or pick best matches. They delegate to
`reverie.metrics`, the tensor PSNR/SSIM that training uses too.

Conventions:

- Inputs are videos as stored on disk / returned by ``Session.step``: ``(T, H, W, 3)`` uint8 in
  [0, 255]; metrics use ``data_range = 255``. A single frame ``(H, W, 3)`` is accepted and treated
  as ``T = 1``.
- **Identical frames**: PSNR is ``+inf`` (the MSE is zero) and SSIM is exactly 1.0. Averages over
  frames should use :func:`finite_mean` (which caps ``inf`` at :data:`PSNR_CAP_DB`) so one exact
  copy does not turn a mean into ``inf``.
- **SSIM window**: Wang et al. (2004) use an 11x11 Gaussian window (sigma 1.5). Our videos are
  64x64, where an 11-pixel window leaves only 54x54 valid positions and smooths away most of the
  structure, so the default here is ``win_size = 7`` (sigma 1.5 unchanged), computed with
  ``pytorch_msssim.ssim`` on the RGB channels (mean over channels and valid positions). Pass
  ``win_size = 11`` to get the textbook value. Numbers are only comparable at equal ``win_size``.
"""

from __future__ import annotations

import numpy as np
import torch

from reverie.metrics import psnr, ssim

DATA_RANGE = 255.0
"""Peak value of uint8 pixels."""

SSIM_WIN_SIZE = 7
"""Default Gaussian window (pixels, odd) for SSIM on 64x64 frames; see module docstring."""

SSIM_WIN_SIGMA = 1.5
"""Gaussian window standard deviation (pixels), as in Wang et al. (2004)."""

PSNR_CAP_DB = 100.0
"""Value that stands in for ``+inf`` PSNR (identical frames) when averaging."""


def _as_video_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check two uint8 videos have the same shape; add a time axis to single frames."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"videos must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) or (H, W, 3) RGB video, got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 videos in [0, 255], got {a.dtype} and {b.dtype}")
    return a, b


def frame_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio of each frame pair, ``10 log10(255^2 / MSE)`` in dB.

    Shapes:
        a, b: ``(T, H, W, 3)`` (or ``(H, W, 3)``), uint8 RGB in [0, 255].
        returns: ``(T,)`` float64 dB; ``+inf`` where the two frames are identical.

    The MSE of a frame is the mean over H, W and the 3 channels, computed in float64.

    Raises:
        ValueError: shapes differ, are not RGB videos, or the dtype is not uint8.
    """
    a, b = _as_video_pair(a, b)
    x, y = (torch.from_numpy(v).to(torch.float64) for v in (a, b))  # (T, H, W, 3)
    return psnr(x, y, DATA_RANGE).numpy()


def frame_ssim(
    a: np.ndarray,
    b: np.ndarray,
    win_size: int = SSIM_WIN_SIZE,
    win_sigma: float = SSIM_WIN_SIGMA,
) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of each frame pair, via ``pytorch_msssim.ssim``.

    Shapes:
        a, b: ``(T, H, W, 3)`` (or ``(H, W, 3)``), uint8 RGB in [0, 255].
        returns: ``(T,)`` float64 in [-1, 1]; exactly 1.0 for identical frames.

    Args:
        win_size: odd Gaussian window size in pixels (default 7 for 64x64 frames, see the module
            docstring); ``H`` and ``W`` must be at least ``win_size``.
        win_sigma: Gaussian standard deviation in pixels.

    Raises:
        ValueError: shapes differ, are not RGB videos, dtype is not uint8, ``win_size`` is even,
            or the frames are smaller than the window.
    """
    a, b = _as_video_pair(a, b)
    if win_size % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win_size}")
    if min(a.shape[1], a.shape[2]) < win_size:
        raise ValueError(f"frames {a.shape[1]}x{a.shape[2]} are smaller than win_size {win_size}")
    x, y = (torch.from_numpy(v).permute(0, 3, 1, 2)[:, None].to(torch.float64) for v in (a, b))
    return ssim(x, y, DATA_RANGE, window=win_size, sigma=win_sigma).numpy()  # (T,): frames


def psnr_matrix(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PSNR of every predicted frame against every reference frame (for best-match scoring).

    The MSE uses ``|p|^2 + |r|^2 - 2 p.r`` in float64, which is exact for uint8 pixels (all
    partial sums stay far below 2^53), so it agrees with :func:`frame_psnr` to rounding.

    Shapes:
        pred: ``(Tp, H, W, 3)`` uint8; ref: ``(Tr, H, W, 3)`` uint8.
        returns: ``(Tp, Tr)`` float64 dB (``+inf`` for identical pairs).

    Raises:
        ValueError: frame shapes differ or inputs are not uint8 RGB videos.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.ndim != 4 or ref.ndim != 4 or pred.shape[1:] != ref.shape[1:] or pred.shape[-1] != 3:
        raise ValueError(
            f"expected (T, H, W, 3) videos with equal frames, got {pred.shape}, {ref.shape}"
        )
    if pred.dtype != np.uint8 or ref.dtype != np.uint8:
        raise ValueError(f"expected uint8 videos, got {pred.dtype} and {ref.dtype}")
    p = pred.reshape(len(pred), -1).astype(np.float64)  # (Tp, D)
    r = ref.reshape(len(ref), -1).astype(np.float64)  # (Tr, D)
    sq = np.sum(p * p, axis=1)[:, None] + np.sum(r * r, axis=1)[None, :] - 2.0 * (p @ r.T)
    mse = np.maximum(sq, 0.0) / p.shape[1]  # (Tp, Tr)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)


def finite_mean(psnr: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """Mean of PSNR values with ``+inf`` (identical frames) replaced by ``cap`` dB.

    Shapes:
        psnr: ``(T,)`` float dB. returns: a Python float (``nan`` when ``T == 0``).
    """
    psnr = np.minimum(np.asarray(psnr, dtype=np.float64), cap)
    return float(np.mean(psnr)) if psnr.size else float("nan")
