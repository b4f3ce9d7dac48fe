"""Named presets: registry behaviour, Wan parameter counts equal diffusers', tiny runs on CPU."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from reverie.models import WanDiT, get_preset, preset_names, register_preset
from reverie.models.state_dicts import diffusers_to_wan_state_dict

# diffusers configs of the released Wan2.1 text-to-video transformers.
WAN_DIFFUSERS = {
    "wan2.1-1.3b": dict(
        num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30
    ),
    "wan2.1-14b": dict(
        num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40
    ),
}
WAN_COMMON = dict(
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    patch_size=(1, 2, 2),
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
)


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


@pytest.mark.parametrize("name", sorted(WAN_DIFFUSERS))
def test_wan_presets_match_diffusers_parameter_count(name: str) -> None:
    with torch.device("meta"):
        reference = WanTransformer3DModel(**WAN_COMMON, **WAN_DIFFUSERS[name])
        ours = WanDiT(get_preset(name))
        backbone_only = WanDiT(get_preset(name, actions=None, poses=None))
    expected = _count(reference.parameters())
    assert _count(ours.backbone_parameters()) == expected
    assert _count(backbone_only.parameters()) == expected
    renamed = diffusers_to_wan_state_dict(reference.state_dict())
    assert {k: v.shape for k, v in renamed.items()} == {
        k: v.shape for k, v in backbone_only.state_dict().items()
    }
    new = _count(ours.parameters()) - expected
    assert 0 < new < expected // 20  # the encoders are a small add-on (< 5 %)


def test_wan_1_3b_has_1_3b_parameters() -> None:
    with torch.device("meta"):
        count = _count(WanDiT(get_preset("wan2.1-1.3b", actions=None, poses=None)).parameters())
    assert 1.3e9 < count < 1.5e9


def test_registry() -> None:
    assert {"tiny", "small", "wan2.1-1.3b", "wan2.1-14b"} <= set(preset_names())
    assert get_preset("tiny", in_channels=8).in_channels == 8
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(KeyError, match="already registered"):
        register_preset("tiny", get_preset("tiny"))


def test_tiny_forward_on_cpu() -> None:
    model = WanDiT(get_preset("tiny")).eval()
    x = torch.randn(1, 5, 16, 8, 8)
    with torch.no_grad():
        out = model(x, torch.rand(1), torch.randn(1, 16, 384))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_tiny_runs_in_bfloat16_close_to_float32() -> None:
    """Norms, modulation and RoPE angles stay float32 inside, as in Wan."""
    torch.manual_seed(0)
    model = WanDiT(get_preset("tiny")).eval()
    with torch.no_grad():
        model.head.head.weight.normal_(std=0.02)  # Wan zero-inits the head
        x, t, context = torch.randn(1, 5, 16, 8, 8), torch.rand(1), torch.randn(1, 16, 384)
        reference = model(x, t, context)
        low = model.to(torch.bfloat16)(x.bfloat16(), t, context.bfloat16())
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).norm() / reference.norm() < 3e-2
