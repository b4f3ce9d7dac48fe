"""Training-time sampling of flow time `t` (teacher training, ODE init, DMD's diffusion time).

- `uniform`: `u ~ U(min_time, max_time)` (Wan2.1; Self Forcing DMD with `min_step = 0.02`,
  `max_step = 0.98`).
- `logit_normal`: `u = sigmoid(n)`, `n ~ N(mean, std)`, clipped to `[min_time, max_time]`
  (SD3 arXiv 2403.03206 §3.1, eq. 19).

Then `t = shift_time(u, shift)` (Self Forcing shifts the sampled timestep the same way).
`per_block_time` gives one time per block of frames, the diffusion-forcing noise pattern of
CausVid (arXiv 2412.07772 §3.2) for block-causal students.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from reverie.diffusion.schedule import shift_time


class TimeDistribution(StrEnum):
    """Distribution of the unshifted training time `u` in [0, 1]."""

    UNIFORM = "uniform"
    LOGIT_NORMAL = "logit_normal"


@dataclass(frozen=True)
class TimeSamplingConfig:
    """How training draws flow times.

    Attributes:
        distribution: `uniform` or `logit_normal` (before the shift).
        shift: time shift applied after drawing (1 = none; Wan/Self Forcing use 5).
        logit_mean, logit_std: parameters of the logit-normal (SD3 default 0, 1).
        min_time, max_time: bounds of the unshifted draw (Self Forcing DMD: 0.02, 0.98).
    """

    distribution: TimeDistribution = TimeDistribution.UNIFORM
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    min_time: float = 0.0
    max_time: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.distribution, TimeDistribution):
            raise TypeError(f"distribution must be a TimeDistribution, got {self.distribution!r}")
        if not 0.0 <= self.min_time < self.max_time <= 1.0:
            raise ValueError(f"need 0 <= min_time < max_time <= 1, got {self}")
        if self.shift <= 0 or self.logit_std <= 0:
            raise ValueError("shift and logit_std must be positive")


def sample_training_time(
    shape: tuple[int, ...],
    config: TimeSamplingConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw flow times for training.

    Shapes: returns `shape` float32 (e.g. `(B,)`, or `(B, T)` per frame), values in
    `[shift(min_time), shift(max_time)]` ⊂ [0, 1]. Drawn on the generator's device (CPU by
    default), then moved to `device`.
    """
    draw_device = generator.device if generator is not None else None
    if config.distribution is TimeDistribution.UNIFORM:
        u = torch.rand(shape, generator=generator, device=draw_device)
        u = config.min_time + (config.max_time - config.min_time) * u
    else:
        n = torch.randn(shape, generator=generator, device=draw_device)
        u = torch.sigmoid(config.logit_mean + config.logit_std * n)
        u = u.clamp(config.min_time, config.max_time)
    return shift_time(u, config.shift).to(device=device)


def per_block_time(
    batch_size: int,
    num_frames: int,
    frames_per_block: int,
    config: TimeSamplingConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One independent time per block of latent frames (diffusion forcing, CausVid §3.2).

    Shapes: returns `(B, num_frames)` float32, constant within each block of
    `frames_per_block` frames (the last block may be shorter).

    Raises:
        ValueError: if `frames_per_block < 1`.
    """
    if frames_per_block < 1:
        raise ValueError(f"frames_per_block must be >= 1, got {frames_per_block}")
    num_blocks = -(-num_frames // frames_per_block)
    t = sample_training_time((batch_size, num_blocks), config, generator, device)  # (B, n_blk)
    return t.repeat_interleave(frames_per_block, dim=1)[:, :num_frames]  # (B, T)
