"""Samplers on analytic velocity fields whose exact answers are known."""

from __future__ import annotations

import pytest
import torch

from reverie.diffusion import (
    FewStepSchedule,
    classifier_free_guidance,
    euler_sample,
    expand_time,
    few_step_sample,
    noisy_sample,
)

SHAPE = (3, 2, 4, 2, 2)  # (B, T, C, H, W)


def point_mass_velocity(target: torch.Tensor):
    """Exact flow velocity when all data equals `target`: v = (x_t - target) / t."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - target) / expand_time(t, x)

    return velocity


def gaussian_velocity(mean: float, std: float):
    """Exact velocity E[noise - x0 | x_t] for data N(mean, std^2) per element.

    With a = 1 - t and var = a^2 std^2 + t^2: E[x0 | x] = mean + a std^2 (x - a mean) / var,
    E[noise | x] = t (x - a mean) / var.
    """

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = expand_time(t, x)
        a = 1 - t
        var = a**2 * std**2 + t**2
        centred = (x - a * mean) / var
        return t * centred - (mean + a * std**2 * centred)

    return velocity


def test_euler_recovers_a_point_mass_exactly() -> None:
    target = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    out = euler_sample(point_mass_velocity(target), noise, num_steps=4, shift=5.0)
    torch.testing.assert_close(out, target)  # straight trajectories: Euler is exact


def test_euler_transports_noise_to_a_gaussian() -> None:
    """The probability-flow ODE of N(m, s^2) maps noise z to m + s z; Euler converges to it at
    first order (4x the steps, 1/4 the error)."""
    noise = torch.randn(64, 1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    noise = noise.double()
    mean, std = 0.5, 0.3
    errors = [
        (
            euler_sample(gaussian_velocity(mean, std), noise, num_steps=n, shift=3.0)
            - mean
            - std * noise
        )
        .abs()
        .max()
        .item()
        for n in (100, 400)
    ]
    assert errors[1] < 0.015
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_few_step_recovers_a_point_mass_and_renoises() -> None:
    target = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    exact = point_mass_velocity(target)

    def recording(x, t):
        seen.append((x.clone(), t.clone()))
        return exact(x, t)

    out = few_step_sample(recording, noise, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, target)
    times = FewStepSchedule().times
    assert [s[1][0].item() for s in seen] == pytest.approx(times)
    assert torch.equal(seen[0][0], noise)
    # step 2's input is x0 re-noised to t_2 with the generator's first fresh draw
    fresh = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(seen[1][0], noisy_sample(target, fresh, times[1]))


def test_few_step_is_seeded() -> None:
    velocity = gaussian_velocity(0.0, 1.0)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    run = [few_step_sample(velocity, noise, generator=torch.Generator().manual_seed(4))]
    run.append(few_step_sample(velocity, noise, generator=torch.Generator().manual_seed(4)))
    run.append(few_step_sample(velocity, noise, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
    with pytest.raises(ValueError, match="first time must be 1"):
        few_step_sample(velocity, noise, schedule=FewStepSchedule(timesteps=(750.0, 250.0)))


def test_classifier_free_guidance() -> None:
    cond = lambda x, t: torch.full_like(x, 2.0)  # noqa: E731
    uncond = lambda x, t: torch.full_like(x, 0.5)  # noqa: E731
    x, t = torch.zeros(SHAPE), torch.ones(SHAPE[0])
    assert classifier_free_guidance(cond, uncond, 1.0)(x, t).eq(2.0).all()
    assert classifier_free_guidance(cond, uncond, 0.0)(x, t).eq(0.5).all()
    assert classifier_free_guidance(cond, uncond, 3.0)(x, t).eq(0.5 + 3 * 1.5).all()
    # guided sampling of two point masses with scale 1 lands on the conditional target
    target = torch.ones(SHAPE)
    guided = classifier_free_guidance(
        point_mass_velocity(target), point_mass_velocity(-target), 1.0
    )
    torch.testing.assert_close(euler_sample(guided, torch.randn(SHAPE), num_steps=3), target)


def test_euler_rejects_bad_grids() -> None:
    with pytest.raises(ValueError, match="decrease from 1 to 0"):
        euler_sample(
            point_mass_velocity(torch.zeros(SHAPE)),
            torch.zeros(SHAPE),
            times=torch.tensor([1.0, 0.5]),
        )
