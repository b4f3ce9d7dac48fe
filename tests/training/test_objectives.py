"""Objectives on hand-computed cases: flow matching, DMD, Window Temporal Delta, smoothness."""

from __future__ import annotations

import math

import pytest
import torch

from reverie.objectives import (
    dmd_gradient,
    dmd_loss,
    flow_matching_loss,
    temporal_smoothness_loss,
    window_temporal_delta_loss,
)


def test_flow_matching_loss_plain_and_weighted():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # squared errors 0, 4, 1, 1
    assert flow_matching_loss(pred, target).item() == pytest.approx(6 / 4)
    weight = torch.tensor([0.5, 2.0])  # per sample: 0.5 * 4 + 2 * 2 = 6 -> / 4
    assert flow_matching_loss(pred, target, weight).item() == pytest.approx(6 / 4)
    frames = torch.zeros(2, 3, 4, 1, 1)
    per_frame = torch.ones(2, 3)
    assert flow_matching_loss(frames + 1, frames, per_frame).item() == pytest.approx(1.0)
    assert flow_matching_loss(pred.bfloat16(), target).dtype == torch.float32
    with pytest.raises(ValueError, match="differ"):
        flow_matching_loss(pred, target[:1])
    with pytest.raises(ValueError, match="leading dims"):
        flow_matching_loss(pred, target, torch.ones(3))


def test_dmd_gradient_and_loss_by_hand():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]], requires_grad=True)
    real = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # |x - real| means: 1.5 and 0 (-> grad 0)
    fake = torch.tensor([[3.0, 1.0], [1.0, 1.0]])
    grad = dmd_gradient(x, real, fake)
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    loss = dmd_loss(x, real, fake)
    assert loss.item() == pytest.approx(0.5 * (2.0**2) / 4)  # 0.5 * mean(grad^2)
    loss.backward()
    torch.testing.assert_close(x.grad, grad / x.numel())  # the surrogate applies grad / N
    with pytest.raises(ValueError, match="shapes differ"):
        dmd_gradient(x, real[:1], fake)


def test_dmd_moves_the_generator_towards_the_real_prediction():
    x = torch.zeros(1, 3, 4, 2, 2, requires_grad=True)  # (B, T, C, H, W)
    real, fake = torch.ones_like(x), torch.full_like(x, -1.0)
    dmd_loss(x, real, fake).backward()
    assert (x.grad < 0).all()  # gradient descent raises x towards the teacher's x0


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_window_temporal_delta_loss_by_hand():
    angles = [0.0, 30.0, 90.0, 100.0]
    e = torch.tensor([[unit(a) for a in angles]]) * torch.tensor([[[1.0], [2.0], [3.0], [0.5]]])
    # k = 1: cos 30, cos 60, cos 10 -> hinge at m = 0.5: 0.366, 0, 0.485
    k1 = (
        max(0.0, math.cos(math.radians(30)) - 0.5) + max(0.0, math.cos(math.radians(10)) - 0.5)
    ) / 3
    assert window_temporal_delta_loss(e, window=1, margin=0.5).item() == pytest.approx(k1, abs=1e-6)
    # k = 2: cos 90, cos 70 -> 0, 0 ; k = 3: cos 100 -> 0
    assert window_temporal_delta_loss(e, window=3, margin=0.5).item() == pytest.approx(
        k1 / 3, abs=1e-6
    )
    # Defaults w = 3, m = 0.85: only the 10-degree pair (cos 0.985) and the 30-degree pair
    # (cos 0.866) exceed the margin.
    k1_default = (math.cos(math.radians(30)) - 0.85 + math.cos(math.radians(10)) - 0.85) / 3
    assert window_temporal_delta_loss(e).item() == pytest.approx(k1_default / 3, abs=1e-6)
    with pytest.raises(ValueError, match="T >= 5"):
        window_temporal_delta_loss(e, window=4)
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        window_temporal_delta_loss(e[0])


def test_window_temporal_delta_loss_gradient_pushes_neighbours_apart():
    e = torch.tensor([[unit(0.0), unit(5.0), unit(10.0), unit(15.0)]], requires_grad=True)
    window_temporal_delta_loss(e).backward()
    moved = e.detach() - 0.1 * e.grad
    assert window_temporal_delta_loss(moved) < window_temporal_delta_loss(e.detach())


def test_temporal_smoothness_loss_by_hand():
    t = torch.arange(5.0)
    line = torch.stack([2 * t + 1, -t], dim=-1)[None]  # constant velocity -> 0
    assert temporal_smoothness_loss(line).item() == pytest.approx(0.0)
    parabola = torch.stack([t**2, torch.zeros(5)], dim=-1)[None]  # second difference (2, 0)
    assert temporal_smoothness_loss(parabola).item() == pytest.approx(2.0)
    zigzag = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]])  # -2 * (3, 4): norm 10
    assert temporal_smoothness_loss(zigzag).item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="T >= 3"):
        temporal_smoothness_loss(zigzag[:, :2])
