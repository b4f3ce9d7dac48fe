"""PSNR and SSIM on tensors: the one implementation that training and evaluation share.

`psnr` and `ssim` score a batch of videos per sample; `reverie.evaluation.metrics` wraps them
for uint8 frames (one number per frame), the `vae` and `mag` stages call them on decoded
videos and latents. SSIM is `pytorch_msssim.ssim` (Wang et al. 2004, eq. 13; Gaussian window,
K1 = 0.01, K2 = 0.03, only windows fully inside the frame), averaged over channels.
"""

from __future__ import annotations

import torch
from einops import rearrange

SSIM_WINDOW = 11
"""Wang et al.'s Gaussian window (pixels, odd)."""

SSIM_SIGMA = 1.5
"""Gaussian window standard deviation (pixels)."""


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample, `10 log10(L^2 / MSE)` dB (`inf` where equal).

    Shapes: pred, target `(B, ...)` -> `(B,)` float32 (float64 inputs stay float64).
    """
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    mse = (pred.to(dtype) - target.to(dtype)).square().flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    *,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """Mean SSIM per sample over every frame and channel. Frames smaller than `window` use the
    largest odd window that fits (e.g. 7 on 8x8 latents); identical frames score exactly 1.

    Shapes: pred, target `(B, T, C, H, W)` -> `(B,)` float32 (float64 inputs stay float64).

    Raises:
        ValueError: shapes differ, or `window` is even.
    """
    from pytorch_msssim import ssim as msssim_ssim

    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"need two (B, T, C, H, W) tensors, got {pred.shape} and {target.shape}")
    if window % 2 != 1:
        raise ValueError(f"window must be odd, got {window}")
    batch, _, _, height, width = target.shape
    size = min(window, height, width)
    size -= 1 - size % 2  # odd
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    x = rearrange(pred.to(dtype), "b t c h w -> (b t) c h w")
    y = rearrange(target.to(dtype), "b t c h w -> (b t) c h w")
    per_frame = msssim_ssim(
        x, y, data_range=data_range, size_average=False, win_size=size, win_sigma=sigma
    )  # (B T,)
    same = (x == y).flatten(1).all(1)  # (B T,): exact 1 instead of 1 - rounding
    per_frame = torch.where(same, torch.ones_like(per_frame), per_frame)
    return per_frame.view(batch, -1).mean(1)
