"""Flow schedule: Wan's shift, conversions, few-step times, training-time sampling."""

from __future__ import annotations

import math

import pytest
import torch

from reverie.diffusion import (
    FewStepSchedule,
    TimeDistribution,
    TimeSamplingConfig,
    expand_time,
    noise_from_velocity,
    noisy_sample,
    per_block_time,
    sample_training_time,
    sampling_times,
    shift_time,
    unshift_time,
    velocity_from_x0,
    velocity_target,
    x0_from_velocity,
)


def test_shift_against_hand_computation() -> None:
    # 5 * 0.5 / (1 + 4 * 0.5) = 2.5 / 3; 3 * 0.2 / (1 + 2 * 0.2) = 0.6 / 1.4
    assert shift_time(0.5, 5.0) == pytest.approx(2.5 / 3.0)
    assert shift_time(0.2, 3.0) == pytest.approx(0.6 / 1.4)
    assert shift_time(0.0, 5.0) == 0.0 and shift_time(1.0, 5.0) == 1.0
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_time(t, 1.0), t)


def test_shift_is_monotone_and_invertible() -> None:
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for shift in (0.5, 1.0, 3.0, 5.0, 8.0):
        shifted = shift_time(t, shift)
        assert (shifted.diff() > 0).all()
        assert shifted.min() >= 0 and shifted.max() <= 1
        torch.testing.assert_close(unshift_time(shifted, shift), t)
    assert (shift_time(t[1:-1], 5.0) > t[1:-1]).all()  # shift > 1 spends time at high noise
    with pytest.raises(ValueError, match="positive"):
        shift_time(0.5, 0.0)


def test_self_forcing_few_step_times() -> None:
    """Self Forcing: [1000, 750, 500, 250] warped by shift 5 -> [1000, 937.5, 833.3, 625]."""
    schedule = FewStepSchedule()
    assert schedule.num_steps == 4
    expected = (1.0, 0.9375, 2.5 / 3.0, 0.625)
    assert schedule.times == pytest.approx(expected)
    with pytest.raises(ValueError, match="decreasing"):
        FewStepSchedule(timesteps=(500.0, 750.0))
    with pytest.raises(ValueError, match="lie in"):
        FewStepSchedule(timesteps=(1000.0, 0.0))


def test_sampling_times_match_wan_sigmas() -> None:
    """Wan2.1 `get_sampling_sigmas(n, shift)` = shift(linspace(1, 0, n + 1)[:n]), then 0."""
    times = sampling_times(4, shift=3.0)
    raw = [1.0, 0.75, 0.5, 0.25, 0.0]
    assert times.tolist() == pytest.approx([3 * s / (1 + 2 * s) for s in raw])
    assert (times.diff() < 0).all()


def test_conversions_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 2, 2, generator=generator)
    noise = torch.randn(2, 3, 4, 2, 2, generator=generator)
    for t in (torch.tensor([0.3, 0.9]), torch.rand(2, 3, generator=generator) * 0.9 + 0.05, 0.5):
        x_t = noisy_sample(x0, noise, t)
        v = velocity_target(x0, noise)
        torch.testing.assert_close(x0_from_velocity(x_t, v, t), x0)
        torch.testing.assert_close(noise_from_velocity(x_t, v, t), noise)
        torch.testing.assert_close(velocity_from_x0(x_t, x0, t), v, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(noisy_sample(x0, noise, 0.0), x0)
    torch.testing.assert_close(noisy_sample(x0, noise, 1.0), noise)
    with pytest.raises(ValueError, match="does not fit"):
        expand_time(torch.rand(3), x0)


def test_uniform_training_time() -> None:
    config = TimeSamplingConfig(shift=5.0, min_time=0.02, max_time=0.98)
    t = sample_training_time((20000,), config, torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.dtype == torch.float32
    assert t.min() >= shift_time(0.02, 5.0) - 1e-6 and t.max() <= shift_time(0.98, 5.0) + 1e-6
    # E[shift(u)] for u ~ U(0.02, 0.98) by quadrature
    grid = torch.linspace(0.02, 0.98, 100001, dtype=torch.float64)
    assert t.double().mean() == pytest.approx(shift_time(grid, 5.0).mean().item(), abs=0.01)
    again = sample_training_time((20000,), config, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_logit_normal_training_time() -> None:
    config = TimeSamplingConfig(TimeDistribution.LOGIT_NORMAL, logit_mean=0.5, logit_std=1.0)
    t = sample_training_time((4, 5000), config, torch.Generator().manual_seed(1))
    assert t.shape == (4, 5000) and 0 <= t.min() and t.max() <= 1
    median = 1 / (1 + math.exp(-0.5))  # sigmoid is monotone: median = sigmoid(mean)
    assert t.median().item() == pytest.approx(median, abs=0.02)
    shifted = sample_training_time(
        (4, 5000), config.__class__(**{**vars(config), "shift": 3.0}), torch.Generator()
    )
    assert shifted.mean() > t.mean()


def test_per_block_time_is_constant_within_blocks() -> None:
    t = per_block_time(2, 7, 3, TimeSamplingConfig(), torch.Generator().manual_seed(0))
    assert t.shape == (2, 7)
    assert (t[:, :3] == t[:, :1]).all() and (t[:, 3:6] == t[:, 3:4]).all()
    assert (t[:, 0] != t[:, 3]).all()
