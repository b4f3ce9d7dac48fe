"""Samplers over any velocity function: the teacher's Euler ODE and the student's few steps.

Samplers take a `VelocityFn(x_t, t) -> v` callable, so the same code drives a `WanDiT` (wrap it
with its context/actions: `lambda x, t: model(x, t, context, actions=a)`), a guided pair of
calls (`classifier_free_guidance`) or an analytic model in tests.

- `euler_sample`: the bidirectional teacher, `x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k)` on
  Wan's shifted grid (Wan2.1 ships UniPC; Euler is the simple solver of the same ODE).
- `few_step_sample`: the distilled student (Self Forcing arXiv 2506.08009 §3, CausVid arXiv
  2412.07772): at each time predict `x0 = x_t - t v`, then re-noise `x0` to the next time with
  fresh noise; the last prediction is the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch

from reverie.diffusion.schedule import (
    DEFAULT_SHIFT,
    FewStepSchedule,
    noisy_sample,
    sampling_times,
    x0_from_velocity,
)

# (x_t (B, T, C, H, W), t (B,) flow time) -> velocity (B, T, C, H, W).
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_guidance(cond: VelocityFn, uncond: VelocityFn, scale: float) -> VelocityFn:
    """Guided velocity `v_u + scale (v_c - v_u)` (Ho & Salimans arXiv 2207.12598 eq. 6; Wan2.1
    `guide_scale`, Self Forcing's teacher uses 3). `scale = 1` is the conditional model.

    Shapes: the returned callable maps `(x_t (B, T, C, H, W), t (B,))` to `(B, T, C, H, W)`.
    """

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Shapes: x `(B, T, C, H, W)`, t `(B,)` -> guided velocity `(B, T, C, H, W)`."""
        v_uncond = uncond(x, t)
        return v_uncond + scale * (cond(x, t) - v_uncond)

    return guided


def _batch_time(value: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), value, dtype=torch.float32, device=x.device)  # (B,)


def euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    *,
    num_steps: int = 50,
    shift: float = DEFAULT_SHIFT,
    times: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE from noise (t = 1) to data (t = 0) with Euler steps.

    Shapes:
        noise: `(B, T, C, H, W)`, standard normal.
        times: optional explicit grid `(n + 1,)` from 1 down to 0 (default
            `sampling_times(num_steps, shift)`, Wan2.1's shifted grid).
        returns x0 `(B, T, C, H, W)` in noise's dtype.

    Raises:
        ValueError: if `times` does not start at 1, end at 0 and decrease.
    """
    if times is None:
        times = sampling_times(num_steps, shift)
    grid = [float(t) for t in times]  # host floats: no device sync inside the loop
    if grid[0] != 1.0 or grid[-1] != 0.0 or any(b >= a for a, b in pairwise(grid)):
        raise ValueError(f"times must decrease from 1 to 0, got {grid}")
    x = noise
    for t, t_next in pairwise(grid):
        v = velocity_fn(x, _batch_time(t, x))  # (B, T, C, H, W)
        x = x + (t_next - t) * v
    return x


def few_step_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    *,
    schedule: FewStepSchedule | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Few-step sampling by x0 prediction and re-noising (Self Forcing Algorithm 1, inner loop).

    For times `t_1 > ... > t_n` (`schedule.times`, default 1, 0.9375, 0.8333, 0.625):
        1. `x0 = x - t_i v(x, t_i)`
        2. if i < n: `x = (1 - t_{i+1}) x0 + t_{i+1} eps`, `eps ~ N(0, I)` fresh.
    Returns the last `x0`. The first time must be 1 so `noise` is a valid `x_{t_1}`.

    Shapes:
        noise: `(B, T, C, H, W)`; returns `(B, T, C, H, W)`.
        Fresh noise is drawn with `generator` on its device (CPU default) and moved to noise's.

    Raises:
        ValueError: if the schedule does not start at t = 1.
    """
    schedule = FewStepSchedule() if schedule is None else schedule
    times = schedule.times
    if times[0] != 1.0:
        raise ValueError(
            f"few_step_sample starts from pure noise: first time must be 1, got {times}"
        )
    x = noise
    for i, t in enumerate(times):
        x0 = x0_from_velocity(x, velocity_fn(x, _batch_time(t, x)), t)  # (B, T, C, H, W)
        if i + 1 < len(times):
            x = noisy_sample(x0, fresh_noise(x0, generator), times[i + 1])
    return x0


def fresh_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `like`, drawn in float32 on the generator's device (so
    a CPU generator seeds GPU runs reproducibly), returned on `like`'s device and dtype.

    Shapes: `like` any shape, e.g. `(B, T, C, H, W)`; returns the same shape.
    """
    device = generator.device if generator is not None else like.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)
