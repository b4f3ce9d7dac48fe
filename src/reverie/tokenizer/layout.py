"""Layout and frame-count helpers at the VAE boundary (docs/conventions.md).

Reverie keeps video and latents as `(B, T, C, H, W)`; diffusers' `AutoencoderKLWan` takes
`(B, C, T, H, W)`. These helpers are the only place that conversion happens in the tokenizer.
The Wan VAE encodes video frame 0 alone and then groups of `temporal_factor` (4) frames, so
`T_video = 1 + 4 (T_lat - 1)` (Wan2.1 §3.1).
"""

from __future__ import annotations

import torch
from einops import rearrange


def to_wan_layout(x: torch.Tensor) -> torch.Tensor:
    """Shapes: `(B, T, C, H, W)` -> `(B, C, T, H, W)` (a view)."""
    return rearrange(x, "b t c h w -> b c t h w")


def from_wan_layout(x: torch.Tensor) -> torch.Tensor:
    """Shapes: `(B, C, T, H, W)` -> `(B, T, C, H, W)` (a view)."""
    return rearrange(x, "b c t h w -> b t c h w")


def num_latent_frames(num_video_frames: int, temporal_factor: int = 4) -> int:
    """Latent frames of a clip: `1 + (T - 1) / temporal_factor`.

    Raises:
        ValueError: unless `T = 1 + temporal_factor * k` with `k >= 0`.
    """
    if num_video_frames < 1 or (num_video_frames - 1) % temporal_factor:
        raise ValueError(
            f"the causal VAE needs 1 + {temporal_factor}k video frames (1, {1 + temporal_factor}, "
            f"{1 + 2 * temporal_factor}, ...), got {num_video_frames}"
        )
    return 1 + (num_video_frames - 1) // temporal_factor


def num_video_frames(num_latents: int, temporal_factor: int = 4) -> int:
    """Video frames decoded from `num_latents` latent frames: `1 + temporal_factor (T_lat - 1)`."""
    if num_latents < 1:
        raise ValueError(f"need at least one latent frame, got {num_latents}")
    return 1 + temporal_factor * (num_latents - 1)


def check_video(video: torch.Tensor, channels: int, spatial_factor: int) -> None:
    """Validate a video batch for encoding (frame count is checked by the caller).

    Shapes: video `(B, T, channels, H, W)`, `H, W` divisible by `spatial_factor`.

    Raises:
        ValueError: on a wrong rank, channel count or spatial size, or non-finite values.
    """
    if video.ndim != 5:
        raise ValueError(f"video must be (B, T, C, H, W), got shape {tuple(video.shape)}")
    _, _, c, h, w = video.shape
    if c != channels:
        raise ValueError(
            f"video must have {channels} channels at dim 2 of (B, T, C, H, W), got shape "
            f"{tuple(video.shape)} (channel-last or (B, C, T, H, W) input?)"
        )
    if h % spatial_factor or w % spatial_factor:
        raise ValueError(f"video size {h}x{w} is not divisible by {spatial_factor}")
    _check_finite(video, "video")


def check_latents(latents: torch.Tensor, channels: int) -> None:
    """Validate latents for decoding. Shapes: `(B, T_lat, channels, h, w)`.

    Raises:
        ValueError: on a wrong rank or channel count, or non-finite values.
    """
    if latents.ndim != 5 or latents.shape[2] != channels:
        raise ValueError(
            f"latents must be (B, T, {channels}, h, w), got shape {tuple(latents.shape)}"
        )
    _check_finite(latents, "latents")


def check_latent_stats(
    mean: tuple[float, ...] | None, std: tuple[float, ...] | None, z_dim: int
) -> None:
    """Validate per-channel latent statistics of a tokenizer config (both or neither).

    Raises:
        ValueError: only one given, not `z_dim` entries each, or a non-positive std.
    """
    if (mean is None) != (std is None):
        raise ValueError("give both latents_mean and latents_std, or neither")
    if mean is not None:
        if len(mean) != z_dim or len(std) != z_dim:
            raise ValueError(f"latents_mean/latents_std need z_dim={z_dim} entries")
        if any(s <= 0 for s in std):
            raise ValueError("latents_std entries must be positive")


def join_pending(pending: torch.Tensor | None, frames: torch.Tensor) -> torch.Tensor:
    """Frames buffered by a streaming encoder followed by new ones.

    Shapes: pending `(B, p, 3, H, W)` or None, frames `(B, n, 3, H, W)` -> `(B, p + n, 3, H, W)`.

    Raises:
        ValueError: the batch or frame size differs from the buffered frames'.
    """
    if pending is None:
        return frames
    if frames.shape[0] != pending.shape[0] or frames.shape[3:] != pending.shape[3:]:
        raise ValueError(
            f"frames {tuple(frames.shape)} do not continue the stream's {tuple(pending.shape)}"
        )
    return torch.cat([pending, frames], dim=1)


def _check_finite(x: torch.Tensor, name: str) -> None:
    # One host sync per call, at the tokenizer boundary (not in a per-layer hot path).
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
