"""What the inference engine needs from a latent-to-pixel decoder.

RELIC §4.5 replaces the Wan VAE decoder with a tiny VAE decoder for real-time speed (a
TAEHV-style per-frame decoder). The engine therefore talks to a `LatentDecoder` protocol, which
`VideoVAE` implements and a tiny decoder can implement later without touching the engine.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class DecoderStream(Protocol):
    """One video stream being decoded incrementally (holds that stream's causal state)."""

    def step(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode the next latent frames.

        Shapes: latents `(B, n, C_lat, h, w)` -> video `(B, m, 3, H, W)` in [-1, 1], with
        `m = 1 + temporal_factor (n - 1)` on the first call and `temporal_factor n` afterwards.
        """
        ...


@runtime_checkable
class LatentDecoder(Protocol):
    """Maps normalised latents to pixels, in one call or as a stream.

    Implementations: `VideoVAE` (Wan2.1 VAE decoder); a tiny decoder (RELIC §4.5) can be added.
    """

    @property
    def latent_channels(self) -> int:
        """Latent channels `C_lat` (Wan2.1: 16)."""
        ...

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (Wan2.1: 8)."""
        ...

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (Wan2.1: 4)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Shapes: latents `(B, T_lat, C_lat, h, w)` -> video `(B, 1 + 4 (T_lat - 1), 3, H, W)`."""
        ...

    def start_decoding(self) -> DecoderStream:
        """A fresh stream with an empty causal state."""
        ...
