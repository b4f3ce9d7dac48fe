"""Rectified-flow schedule of Wan2.1: interpolation, velocity, x0/noise conversions, time shift.

Convention (docs/conventions.md; Wan2.1, diffusers `FlowMatchEulerDiscreteScheduler`):

    x_t = (1 - t) x0 + t noise,     t in [0, 1], t = 1 is pure noise
    v   = dx_t/dt = noise - x0      (what `WanDiT` predicts)
    x0  = x_t - t v,   noise = x_t + (1 - t) v

Wan's timestep shift (SD3 arXiv 2403.03206 §5.3.2; Wan2.1 `get_sampling_sigmas`) spends more
steps at high noise: `t' = shift t / (1 + (shift - 1) t)`, shift 5 for Self Forcing/CausVid.
The 0-1000 "timestep" appears only in `FewStepSchedule.timesteps` (Self Forcing's
`denoising_step_list`), converted with `WAN_TIMESTEP_SCALE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from reverie.models.conditioning import WAN_TIMESTEP_SCALE

# Self Forcing / CausVid / Wan2.1 480p sampling shift.
DEFAULT_SHIFT = 5.0


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Wan/SD3 time shift `t' = shift t / (1 + (shift - 1) t)`; maps [0, 1] onto [0, 1],
    monotonically increasing, fixes 0 and 1; `shift = 1` is the identity.

    Shapes: any (elementwise); floats stay floats.

    Raises:
        ValueError: if `shift <= 0`.
    """
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Inverse of `shift_time`: `t = t' / (shift - (shift - 1) t')`. Shapes: any."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return t / (shift - (shift - 1) * t)


def expand_time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast flow time against latents.

    Shapes:
        t: scalar, `(B,)` or per frame `(B, T)`; x: `(B, T, C, H, W)`.
        returns `(B, 1, 1, 1, 1)` or `(B, T, 1, 1, 1)` (or a 0-d tensor), in x's dtype.

    Raises:
        ValueError: if `t` has another shape.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and t.shape[0] == x.shape[0]:
        return t[:, None, None, None, None]
    if t.ndim == 2 and t.shape == x.shape[:2]:
        return t[:, :, None, None, None]
    raise ValueError(f"t of shape {tuple(t.shape)} does not fit latents {tuple(x.shape)}")


def noisy_sample(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Forward process `x_t = (1 - t) x0 + t noise` (diffusers `scale_noise`, Self Forcing
    `add_noise`). Shapes: x0, noise `(B, T, C, H, W)`; t as in `expand_time`."""
    t = expand_time(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching regression target `v = noise - x0` (Wan2.1). Shapes: `(B, T, C, H, W)`."""
    return noise - x0


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """`x0 = x_t - t v` (Self Forcing `_convert_flow_pred_to_x0`). Shapes: `(B, T, C, H, W)`."""
    return x_t - expand_time(t, x_t) * v


def noise_from_velocity(
    x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    """`noise = x_t + (1 - t) v`. Shapes: `(B, T, C, H, W)`."""
    return x_t + (1 - expand_time(t, x_t)) * v


def velocity_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """`v = (x_t - x0) / t` (Self Forcing `_convert_x0_to_flow_pred`); undefined at t = 0.

    Shapes: `(B, T, C, H, W)`; t as in `expand_time`, all entries > 0.
    """
    return (x_t - x0) / expand_time(t, x_t)


def sampling_times(num_steps: int, shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """Time grid of a multi-step sampler: `shift_time(linspace(1, 0, n + 1))`.

    Equals Wan2.1's `get_sampling_sigmas(n, shift)` followed by the final 0.

    Shapes: returns `(num_steps + 1,)` float64, from 1 down to 0, strictly decreasing.

    Raises:
        ValueError: if `num_steps < 1`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return shift_time(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift)


@dataclass(frozen=True)
class FewStepSchedule:
    """The few-step student's denoising times (Self Forcing arXiv 2506.08009 §3, CausVid).

    Attributes:
        timesteps: Wan timesteps before warping, descending (Self Forcing:
            `denoising_step_list = [1000, 750, 500, 250]`, RELIC §4.2: 4 steps).
        shift: time shift applied to `timesteps / 1000` (`warp_denoising_step`, shift 5).
    """

    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = DEFAULT_SHIFT

    def __post_init__(self) -> None:
        ts = self.timesteps
        if not ts or any(not 0 < a <= WAN_TIMESTEP_SCALE for a in ts):
            raise ValueError(f"timesteps must lie in (0, {WAN_TIMESTEP_SCALE}], got {ts}")
        if any(b >= a for a, b in pairwise(ts)):
            raise ValueError(f"timesteps must be strictly decreasing, got {ts}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")

    @property
    def times(self) -> tuple[float, ...]:
        """Warped flow times, e.g. `(1.0, 0.9375, 0.8333, 0.625)` for the defaults."""
        return tuple(shift_time(ts / WAN_TIMESTEP_SCALE, self.shift) for ts in self.timesteps)

    @property
    def num_steps(self) -> int:
        """Denoising passes per block (the cache-write pass comes on top)."""
        return len(self.timesteps)
