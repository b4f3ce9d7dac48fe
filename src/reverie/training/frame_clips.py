"""Clips of clean latent frames for the stages that train memory components (``mag``'s memory
model, ``retrieval``'s embedder): encoded latents (``LatentClipDataset``, frames only) or, with
no encoded data, synthetic clips with slow temporal structure (:class:`SmoothLatentClips`).

    data = FrameClipsConfig(latents=Path("data/tiny-latents"), batch_size=8)
    clips = latent_clips(data, num_frames=8, channels=16)     # items (8, 16, h, w)
    stream = stage.stream(clips, data, start=0)               # (b, 8, 16, h, w) batches
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from reverie.training.distributed import DistContext
from reverie.training.seeding import mix_seed


@dataclass(frozen=True)
class FrameClipsConfig:
    """Clips of clean latent frames: ``latents`` (a ``reverie encode`` directory read with
    ``LatentClipDataset``) or, when None, ``num_samples`` synthetic clips
    (:class:`SmoothLatentClips`).

    Attributes:
        batch_size: global micro-batch size in clips (divisible by the world size).
        latent_size: ``(h, w)`` of the synthetic latents.
        palindrome: palindrome probability of ``LatentClipDataset`` (RELIC §3.4).
        field_grid: synthetic: side of the coarse random grid upsampled into a smooth field.
        speed: synthetic: range of the per-clip angular speed, radians per latent frame.
    """

    latents: Path | None = None
    latent_size: tuple[int, int] = (8, 8)
    num_samples: int = 256
    batch_size: int = 8
    seed: int = 1234
    num_workers: int = 0
    palindrome: float = 0.0
    field_grid: int = 3
    speed: tuple[float, float] = (0.05, 0.25)

    def __post_init__(self) -> None:
        if min(self.num_samples, self.batch_size, self.field_grid, *self.latent_size) < 1:
            raise ValueError("num_samples, batch_size, field_grid and latent_size must be >= 1")
        if not 0.0 <= self.speed[0] <= self.speed[1]:
            raise ValueError(f"speed must be an interval [lo, hi] with 0 <= lo <= hi: {self.speed}")


class SmoothLatentClips(Dataset):
    """Synthetic latent clips with slow temporal structure, deterministic per index.

    Clip ``i`` (from ``Generator(seed + i)``): two smooth random fields ``A, B`` (a
    ``field_grid``-sided normal grid, bicubic-upsampled, standardised per channel) and
    ``x_t = cos(φ + ω t) A + sin(φ + ω t) B`` with ``ω ~ U(speed)``, ``φ ~ U(0, 2π)``: unit
    variance, neighbours similar, distant frames different.

    Shapes:
        item: ``(T, C, h, w)`` float32.
    """

    def __init__(self, cfg: FrameClipsConfig, num_frames: int, channels: int, seed: int) -> None:
        self.cfg, self.num_frames, self.channels, self.seed = cfg, num_frames, channels, seed

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the latent frames."""
        return self.cfg.latent_size

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, index))
        grid = self.cfg.field_grid
        coarse = torch.randn(2, self.channels, grid, grid, generator=g)
        fields = F.interpolate(coarse, self.cfg.latent_size, mode="bicubic", align_corners=True)
        mean, std = fields.mean((-2, -1), keepdim=True), fields.std((-2, -1), keepdim=True)
        fields = (fields - mean) / (std + 1e-6)  # (2, C, h, w)
        lo, hi = self.cfg.speed
        omega = lo + (hi - lo) * torch.rand((), generator=g)
        phase = 2 * math.pi * torch.rand((), generator=g)
        angle = phase + omega * torch.arange(self.num_frames)  # (T,)
        return (
            angle.cos()[:, None, None, None] * fields[0]
            + angle.sin()[:, None, None, None] * (fields[1])
        )  # (T, C, h, w)


class LatentClipFrames(Dataset):
    """The latents of ``reverie.training.latents.LatentClipDataset`` clips.

    Shapes:
        item: ``(T, C, h, w)`` float32 (normalised by the dataset's statistics).

    Raises:
        ValueError: the dataset's latent channels are not ``channels``; the dataset's own errors.
    """

    def __init__(self, cfg: FrameClipsConfig, num_frames: int, channels: int) -> None:
        from reverie.training.latents import LatentClipDataset  # at use: tests substitute it

        self.clips = LatentClipDataset(cfg.latents, num_frames, palindrome=cfg.palindrome)
        found = self.clips.latent_shape[0]
        if found != channels:
            raise ValueError(
                f"data.latents {cfg.latents} has {found} channels, the model {channels}"
            )

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the dataset's latent frames."""
        return tuple(self.clips.latent_shape[1:])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.clips[index].latents[0]  # (T, C, h, w)


def latent_clips(
    cfg: FrameClipsConfig, num_frames: int, channels: int, seed: int | None = None
) -> SmoothLatentClips | LatentClipFrames:
    """The clip dataset of ``cfg`` (``LatentClipFrames`` or ``SmoothLatentClips`` with ``seed``,
    default ``cfg.seed``); items ``(num_frames, channels, h, w)``."""
    if cfg.latents is not None:
        return LatentClipFrames(cfg, num_frames, channels)
    return SmoothLatentClips(cfg, num_frames, channels, cfg.seed if seed is None else seed)


def check_data(cfg: FrameClipsConfig, dist: DistContext) -> None:
    """Batch size divisible by the ranks; ``latents`` exists.

    Raises:
        ValueError / FileNotFoundError: naming the ``data.*`` key.
    """
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"data.batch_size={cfg.batch_size} is not divisible by {dist.world_size}")
    if cfg.latents is not None and not cfg.latents.exists():
        raise FileNotFoundError(f"data.latents: nothing at {cfg.latents}")
