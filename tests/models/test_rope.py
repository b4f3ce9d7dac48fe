"""3D RoPE: Wan-exact at scale 1, valid rotations, YaRN temporal extension, absolute offsets."""

from __future__ import annotations

import math

import pytest
import torch

from reverie.models.rope import (
    RopeConfig,
    RotaryEmbedding3D,
    apply_rotary,
    axis_frequencies,
    grid_positions,
    rope_axis_dims,
)

HEAD_DIM = 128  # Wan2.1 head dim: split (44, 42, 42)


def test_axis_split_matches_wan() -> None:
    assert rope_axis_dims(128) == (44, 42, 42)
    assert rope_axis_dims(16) == (8, 4, 4)
    with pytest.raises(ValueError):
        rope_axis_dims(15)


def test_scale_one_is_wan_exact() -> None:
    """Against Wan's `rope_params`: angles `pos * theta^(-2i/d)` in float64, per axis."""
    rope = RotaryEmbedding3D(HEAD_DIM, RopeConfig(time_scale=1.0))
    positions = grid_positions(4, 3, 5, frame_offset=17)
    cos, sin = rope(positions)
    expected = []
    for axis, dim in enumerate(rope_axis_dims(HEAD_DIM)):
        freqs = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2).to(torch.float64).div(dim))
        expected.append(torch.outer(positions[:, axis].double(), freqs))
    angles = torch.cat(expected, dim=-1)
    assert torch.equal(cos, angles.cos().float()) and torch.equal(sin, angles.sin().float())


def test_time_scaling_is_a_rotation_that_slows_time_only(generator) -> None:
    base = RotaryEmbedding3D(HEAD_DIM, RopeConfig())
    scaled = RotaryEmbedding3D(HEAD_DIM, RopeConfig(time_scale=4.0, time_original_frames=21))
    (t_base, h_base, w_base), (t_new, h_new, w_new) = base.frequencies(), scaled.frequencies()
    assert torch.equal(h_base, h_new) and torch.equal(w_base, w_new)
    assert torch.all(t_new <= t_base)
    torch.testing.assert_close(t_new[-1], t_base[-1] / 4.0)  # lowest frequency interpolated
    assert t_new[0] > t_base[0] / 4.0  # fast frequencies are kept (more than interpolated)
    x = torch.randn(2, 3, 60, HEAD_DIM, generator=generator)
    cos, sin = scaled(grid_positions(5, 3, 4, frame_offset=70))
    rotated = apply_rotary(x, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))  # norm preserving
    inverse = apply_rotary(rotated, cos, -sin)
    torch.testing.assert_close(inverse, x, atol=1e-5, rtol=0)


def test_scores_depend_on_relative_positions_only(generator) -> None:
    """Absolute frame offsets: shifting every position by the same frames leaves q.k."""
    rope = RotaryEmbedding3D(16, RopeConfig())
    q = torch.randn(1, 1, 12, 16, generator=generator)
    k = torch.randn(1, 1, 12, 16, generator=generator)

    def scores(offset: int) -> torch.Tensor:
        cos, sin = rope(grid_positions(3, 2, 2, frame_offset=offset))
        return apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores(0), scores(37), atol=1e-5, rtol=0)


def test_frequencies_are_wan_base() -> None:
    freqs = axis_frequencies(8, 10000.0)
    torch.testing.assert_close(freqs, torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))
    assert math.isclose(float(freqs[0]), 1.0)


def test_invalid_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        RopeConfig(time_scale=0.5)
