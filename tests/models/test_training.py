"""Smoke test: two optimizer steps with actions and poses on CPU."""

from __future__ import annotations

import torch
from model_testing import conditioning, tiny_config

from reverie.models import AttentionConfig, AttentionMode, WanDiT


def test_two_steps_train_the_new_encoders(generator) -> None:
    torch.manual_seed(0)
    config = tiny_config(attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, 1))
    model = WanDiT(config).train()
    with torch.no_grad():  # stand in for a pretrained Wan (its fresh init has a zero head)
        model.head.head.weight.normal_(std=0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    frames = 3
    clean = torch.randn(2, frames, 4, 4, 4, generator=generator)
    context = torch.randn(2, 5, 12, generator=generator)
    actions, poses = conditioning(2, 1 + 4 * (frames - 1), generator)
    encoders = {"action": model.action_encoder, "pose": model.pose_encoder}
    for step in range(2):
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.rand(2, frames, generator=generator)  # per-frame flow time
        s = t[:, :, None, None, None]
        noisy = (1 - s) * clean + s * noise  # rectified flow, t = 1 is noise
        velocity = model(noisy, t, context, actions=actions, poses=poses)
        loss = torch.nn.functional.mse_loss(velocity, noise - clean)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        for name, encoder in encoders.items():
            assert encoder.proj[0].weight.grad.abs().sum() > 0, name
            if step == 1:  # once the zero-init projections moved, gradient reaches the MLPs
                assert encoder.mlp[0].weight.grad.abs().sum() > 0, name
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
