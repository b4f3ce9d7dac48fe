"""`WanDiTConfig`: the world-model backbone's configuration, composed of its components' configs.

Component configs live next to their components (`RopeConfig` in `rope.py`, `AttentionConfig`
in `attention.py`, encoder configs in `conditioning.py`); this file composes them and gives the
strict JSON round trip used by checkpoints (unknown keys and wrong types are errors, STYLE §3).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from reverie.models.attention import AttentionConfig
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig
from reverie.models.rope import RopeConfig, rope_axis_dims


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

    def __post_init__(self) -> None:
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
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WanDiTConfig:
        """Strict inverse of `to_dict`. Raises `TypeError`/`KeyError` on bad types/keys."""
        return _build(cls, data, "config")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyError(f"{path}: unknown keys {unknown} for {cls.__name__}")
    values = {name: _coerce(data[name], hints[name], f"{path}.{name}") for name in data}
    return cls(**values)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise TypeError(f"{path}: None is not allowed")
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise TypeError(f"{path}: expected a sequence of {len(args)}, got {value!r}")
        return tuple(
            _coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, bool, str) and type(value) is hint:
        return value
    raise TypeError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
