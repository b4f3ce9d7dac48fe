"""Ours == diffusers' WanTransformer3DModel (fp32, max abs error <= 1e-4) on several configs."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from reverie.models import WanDiT

TOLERANCE = 1e-4

# (diffusers kwargs, latent shape (B, T, C, H, W), text length)
CASES = [
    (
        dict(
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=4,
            out_channels=4,
            text_dim=12,
            freq_dim=16,
            ffn_dim=48,
            num_layers=1,
        ),
        (1, 1, 4, 4, 4),
        5,
    ),
    (
        dict(
            num_attention_heads=4,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=32,
            ffn_dim=96,
            num_layers=3,
            cross_attn_norm=False,
        ),
        (2, 3, 16, 6, 10),
        9,
    ),
    (
        dict(
            num_attention_heads=3,
            attention_head_dim=8,
            in_channels=6,
            out_channels=3,
            text_dim=20,
            freq_dim=8,
            ffn_dim=40,
            num_layers=2,
            qk_norm=None,
            cross_attn_norm=True,
        ),
        (1, 5, 6, 8, 4),
        3,
    ),
    (
        dict(
            num_attention_heads=2,
            attention_head_dim=32,
            in_channels=5,
            out_channels=5,
            text_dim=16,
            freq_dim=64,
            ffn_dim=128,
            num_layers=2,
            patch_size=(1, 1, 2),
            eps=1e-5,
        ),
        (2, 4, 5, 3, 6),
        4,
    ),
]


def _diffusers(kwargs: dict, seed: int) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**kwargs).eval()
    with torch.no_grad():  # make biases and norm weights nonzero so every mapping matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _reference(model, x, t, context):
    """diffusers speaks (B, C, T, H, W) and timestep = 1000 t."""
    with torch.no_grad():
        out = model(x.transpose(1, 2), 1000 * t, context, return_dict=False)[0]
    return out.transpose(1, 2)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_diffusers(case: int) -> None:
    kwargs, shape, text_len = CASES[case]
    reference = _diffusers(kwargs, seed=case)
    ours = WanDiT.from_diffusers(reference).eval()
    g = torch.Generator().manual_seed(case)
    x = torch.randn(shape, generator=g)
    t = torch.rand(shape[0], generator=g)
    context = torch.randn(shape[0], text_len, kwargs["text_dim"], generator=g)
    with torch.no_grad():
        out = ours(x, t, context)
    expected = _reference(reference, x, t, context)
    assert out.shape == (*shape[:2], kwargs["out_channels"], *shape[3:])
    assert (out - expected).abs().max() <= TOLERANCE


def test_per_frame_time_matches_diffusers_per_token_timesteps() -> None:
    """Per-frame t == diffusers' per-token timestep path (Wan2.2 ti2v style) expanded per frame."""
    kwargs, shape, text_len = CASES[1]
    reference = _diffusers(kwargs, seed=7)
    ours = WanDiT.from_diffusers(reference).eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g)
    batch, frames, _, height, width = shape
    t = torch.rand(batch, frames, generator=g)
    context = torch.randn(batch, text_len, kwargs["text_dim"], generator=g)
    tokens_per_frame = (height // 2) * (width // 2)
    t_tokens = t.repeat_interleave(tokens_per_frame, dim=1)  # (B, N)
    with torch.no_grad():
        out = ours(x, t, context)
    expected = _reference(reference, x, t_tokens, context)
    assert (out - expected).abs().max() <= TOLERANCE


def test_uniform_per_frame_time_equals_scalar_time(generator) -> None:
    kwargs, shape, text_len = CASES[1]
    ours = WanDiT.from_diffusers(_diffusers(kwargs, seed=3)).eval()
    x = torch.randn(shape, generator=generator)
    t = torch.rand(shape[0], generator=generator)
    context = torch.randn(shape[0], text_len, kwargs["text_dim"], generator=generator)
    with torch.no_grad():
        scalar = ours(x, t, context)
        per_frame = ours(x, t[:, None].expand(-1, shape[1]), context)
    torch.testing.assert_close(scalar, per_frame, rtol=0, atol=1e-6)


def test_image_to_video_configs_are_rejected() -> None:
    model = WanTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        text_dim=8,
        freq_dim=8,
        ffn_dim=16,
        num_layers=1,
        image_dim=8,
        added_kv_proj_dim=16,
    )
    with pytest.raises(NotImplementedError, match="image-to-video"):
        WanDiT.from_diffusers(model)
