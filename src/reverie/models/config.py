"""`WanDiTConfig`: the world-model backbone's configuration, composed of its components' configs.

Component configs live next to their components (`RopeConfig` in `rope.py`, `AttentionConfig`
in `attention.py`, encoder configs in `conditioning.py`); this file composes them and gives the
strict JSON round trip used by checkpoints (unknown keys and wrong types are errors, STYLE §3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from reverie.config_utils import from_dict, to_dict
from reverie.models.attention import AttentionConfig
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig
from reverie.models.rope import RopeConfig, rope_axis_dims

# Output-head targets (`WanDiTConfig.prediction`).
PREDICTIONS = ("velocity", "x0")


@dataclass(frozen=True)
class WanDiTConfig:
    """Wan2.1 text-to-video DiT plus RELIC's action/pose encoders.

    Attributes:
        dim: hidden size (`num_heads * head_dim`).
        ffn_dim: FFN inner size.
        num_heads: attention heads (self and cross).
        num_layers: DiT blocks.
        in_channels, out_channels: latent channels (Wan VAE: 16).
        text_dim: text-encoder hidden size (umT5-XXL: 4096).
        freq_dim: sinusoidal timestep-embedding size.
        patch_size: (time, height, width) patch; Wan uses (1, 2, 2). The time patch must be 1
            (per-frame time, actions and poses map one latent frame to one token frame).
        qk_norm: RMSNorm on Q and K across all heads.
        cross_attn_norm: affine LayerNorm before text cross-attention.
        eps: epsilon of all norms.
        vae_temporal_stride: video frames per latent frame after the first (Wan VAE: 4).
        rope, attention: see `RopeConfig`, `AttentionConfig`.
        actions, poses: encoder configs, or None to build the model without that encoder.
        prediction: what the output head predicts: `velocity` (Wan, flow matching) or `x0`
            (the clean latents; JiT, Li & He arXiv 2511.13720: easier for a network whose
            patch tokens are as wide as its hidden size). `WanDiT.forward` returns the
            velocity either way, so samplers and losses do not change.
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    vae_temporal_stride: int = 4
    rope: RopeConfig = field(default_factory=RopeConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    actions: ActionEncoderConfig | None = field(default_factory=ActionEncoderConfig)
    poses: PoseEncoderConfig | None = field(default_factory=PoseEncoderConfig)
    prediction: str = "velocity"

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        rope_axis_dims(self.head_dim)  # raises on an odd head dim
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            raise ValueError(f"patch_size must be (1, ph, pw), got {self.patch_size}")
        if self.freq_dim % 2:
            raise ValueError("freq_dim must be even")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def patch_features(self) -> int:
        """Output features per token: `out_channels * prod(patch_size)`."""
        return self.out_channels * math.prod(self.patch_size)

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Tokens of one latent frame of `height x width` latent pixels."""
        return (height // self.patch_size[1]) * (width // self.patch_size[2])

    def replace(self, **changes: Any) -> WanDiTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (enums as their values, tuples as lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WanDiTConfig:
        """Strict inverse of `to_dict`.

        Raises:
            ValueError: on unknown or missing keys and values of the wrong type (names the key).
        """
        return from_dict(cls, data, "config")
