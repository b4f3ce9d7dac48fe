"""Helpers shared by the model tests (imported by the test modules)."""

from __future__ import annotations

import torch

from reverie.models import WanDiTConfig
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig


def tiny_config(**overrides) -> WanDiTConfig:
    """A 2-layer model small enough for exhaustive equivalence tests."""
    fields = dict(
        dim=32,
        ffn_dim=64,
        num_heads=2,
        num_layers=2,
        in_channels=4,
        out_channels=4,
        text_dim=12,
        freq_dim=16,
        actions=ActionEncoderConfig(hidden_dim=16),
        poses=PoseEncoderConfig(hidden_dim=16),
    )
    fields.update(overrides)
    return WanDiTConfig(**fields)


def random_rotations(batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random proper rotations `(B, T, 3, 3)` via QR."""
    q, r = torch.linalg.qr(torch.randn(batch, frames, 3, 3, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    det = torch.linalg.det(q)
    return q * det[..., None, None].sign()


def conditioning(batch: int, num_video: int, generator: torch.Generator):
    """Random actions `(B, T_video, 13)` and poses `(R, P)`."""
    actions = torch.rand(batch, num_video, 13, generator=generator)
    rotation = random_rotations(batch, num_video, generator)
    centre = torch.randn(batch, num_video, 3, generator=generator)
    return actions, (rotation, centre)


def perturb_new_modules(model, generator: torch.Generator, scale: float = 0.1) -> None:
    """Give the zero-initialised action/pose projections nonzero weights."""
    with torch.no_grad():
        for encoder in (model.action_encoder, model.pose_encoder):
            if encoder is None:
                continue
            for proj in encoder.proj:
                proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * scale)
                proj.bias.copy_(torch.randn(proj.bias.shape, generator=generator) * scale)
