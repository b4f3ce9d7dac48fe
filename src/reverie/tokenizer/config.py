"""`VAEConfig`: the video tokenizer's configuration and its named presets (STYLE §3, §5).

The tokenizer is Wan2.1's causal 3D VAE (diffusers `AutoencoderKLWan`): 8x spatial and 4x
temporal compression, `T = 1 + 4k` video frames -> `1 + k` latent frames (RELIC §4.1, Wan2.1
§3.1). Presets:

- `tiny`: for our 64x64 worlds on CPU (base_dim 16, one residual block per stage, 2.6M params).
  z_dim stays 16 so latents fit the DiT presets (`in_channels = 16`) unchanged. Its latent
  normalisation is the identity until statistics are measured on our data.
- `wan2.1`: the released Wan2.1 VAE (127M params) with Wan's per-channel latent mean/std.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from reverie.config_utils import from_dict, to_dict
from reverie.registry import Registry
from reverie.tokenizer.layout import check_latent_stats

# Wan2.1 VAE per-channel latent statistics (Wan2.1 `WanVAE.mean/std`, diffusers defaults).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and latent normalisation of the Wan causal video VAE.

    Attributes:
        base_dim: channels of the first stage (Wan2.1: 96).
        z_dim: latent channels (Wan2.1: 16).
        dim_mult: channel multiplier per stage; `len(dim_mult) - 1` spatial 2x downsamplings.
        num_res_blocks: residual blocks per stage.
        temperal_downsample: which downsamplings also halve time (diffusers' spelling).
        latents_mean, latents_std: per-channel statistics (`z_dim` entries each), or None for
            the identity; `encode` returns `(z - mean) / std` and `decode` inverts it (Wan2.1
            pipeline normalisation).
        in_channels: video channels (RGB: 3).
    """

    base_dim: int
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    in_channels: int = 3

    def __post_init__(self) -> None:
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError("temperal_downsample needs one entry per downsampling stage")
        check_latent_stats(self.latents_mean, self.latents_std, self.z_dim)

    @property
    def latent_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel `(mean, std)`; the identity `(0, 1)` when none are configured."""
        if self.latents_mean is None:
            return (0.0,) * self.z_dim, (1.0,) * self.z_dim
        return self.latents_mean, self.latents_std

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (Wan2.1: 8)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (Wan2.1: 4)."""
        return 2 ** sum(self.temperal_downsample)

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of diffusers' `AutoencoderKLWan` (attention-free, Wan2.1)."""
        return dict(
            base_dim=self.base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            attn_scales=[],
            temperal_downsample=list(self.temperal_downsample),
            latents_mean=list(self.latent_mean_std[0]),
            latents_std=list(self.latent_mean_std[1]),
            in_channels=self.in_channels,
            out_channels=self.in_channels,
            scale_factor_temporal=self.temporal_factor,
            scale_factor_spatial=self.spatial_factor,
        )

    def replace(self, **changes: Any) -> VAEConfig:
        """A copy with `changes` (`dataclasses.replace`; validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        """Strict inverse of `to_dict`.

        Raises:
            ValueError: on unknown or missing keys and values of the wrong type (names the key).
        """
        return from_dict(cls, data, "VAEConfig")


VAE_PRESETS: Registry[VAEConfig] = Registry("VAE preset")


def register_vae_preset(name: str, config: VAEConfig) -> None:
    """Add a named preset. Raises `KeyError` if the name is taken."""
    VAE_PRESETS.add(name, config)


def vae_preset_names() -> list[str]:
    """Registered preset names, sorted."""
    return VAE_PRESETS.names()


def get_vae_config(name: str, **overrides: Any) -> VAEConfig:
    """The preset's config with `overrides` applied.

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    return VAE_PRESETS.get(name).replace(**overrides)


# 2.6M params; 33 frames at 64x64 encode/decode in well under a second on 2 CPU cores.
register_vae_preset("tiny", VAEConfig(base_dim=16, num_res_blocks=1))
# Wan2.1 VAE (Wan2.1-T2V-1.3B/14B `vae/`), 127M params.
register_vae_preset(
    "wan2.1",
    VAEConfig(
        base_dim=96,
        num_res_blocks=2,
        latents_mean=WAN21_LATENTS_MEAN,
        latents_std=WAN21_LATENTS_STD,
    ),
)
