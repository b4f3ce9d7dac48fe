"""Named size presets of the world-model backbone (STYLE §5: `tiny`, `wan2.1-1.3b`, ...).

The Wan presets have exactly the parameter count of diffusers' `WanTransformer3DModel` with the
same sizes (tested on the `meta` device), plus our zero-initialised action/pose encoders.
`tiny` and `small` use a 384-d text encoder (all-MiniLM-L6-v2 states, docs/ENVIRONMENT.md);
override `text_dim`/`in_channels` to match other encoders or VAEs.
"""

from __future__ import annotations

from typing import Any

from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig
from reverie.models.config import WanDiTConfig
from reverie.registry import Registry

# Hidden size of all-MiniLM-L6-v2, the text encoder shipped for CPU work.
MINILM_TEXT_DIM = 384

PRESETS: Registry[WanDiTConfig] = Registry("preset")


def register_preset(name: str, config: WanDiTConfig) -> None:
    """Add a named preset. Raises `KeyError` if the name is taken."""
    PRESETS.add(name, config)


def preset_names() -> list[str]:
    return PRESETS.names()


def get_preset(name: str, **overrides: Any) -> WanDiTConfig:
    """The preset's config with `overrides` applied (`dataclasses.replace` semantics).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    return PRESETS.get(name).replace(**overrides)


# CPU-sized: ~8M parameters, a (1, 5, 16, 8, 8) forward takes a few ms on 2 cores.
register_preset(
    "tiny",
    WanDiTConfig(
        dim=256,
        ffn_dim=1024,
        num_heads=4,
        num_layers=8,
        text_dim=MINILM_TEXT_DIM,
        actions=ActionEncoderConfig(hidden_dim=64),
        poses=PoseEncoderConfig(hidden_dim=64),
    ),
)
# `tiny` on the linear patch tokenizer's 4x latents (16 x 16 x 16 for 64x64 video,
# `reverie.tokenizer.PatchTokenizer`): patch (1, 4, 4) keeps 16 tokens per latent frame, so the
# streaming cost equals `tiny` on the 8x Wan VAE's latents with patch (1, 2, 2).
register_preset("tiny-patch4", PRESETS.get("tiny").replace(patch_size=(1, 4, 4)))
# One-GPU experiments (~DiT-B width, ~150M parameters).
register_preset(
    "small",
    WanDiTConfig(
        dim=768,
        ffn_dim=3072,
        num_heads=12,
        num_layers=12,
        text_dim=MINILM_TEXT_DIM,
        actions=ActionEncoderConfig(hidden_dim=128),
        poses=PoseEncoderConfig(hidden_dim=128),
    ),
)
# Wan2.1-T2V-1.3B (diffusers: 12 heads x 128, ffn 8960, 30 layers).
register_preset("wan2.1-1.3b", WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30))
# Wan2.1-T2V-14B (diffusers: 40 heads x 128, ffn 13824, 40 layers); RELIC's base (§4.1).
register_preset("wan2.1-14b", WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40))
