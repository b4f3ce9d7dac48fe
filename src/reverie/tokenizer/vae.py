"""`VideoVAE`: the world model's video tokenizer, Wan2.1's causal 3D VAE in Reverie's layout.

    video (B, T, 3, H, W) in [-1, 1], T = 1 + 4k
      --encoder (causal 3D convs, chunks of 1, 4, 4, ... frames)--> posterior N(mean, var)
      --mean (or a sample), (z - latents_mean) / latents_std--> latents (B, 1 + k, 16, H/8, W/8)
      --decoder (one latent frame at a time, causal feature cache)--> video (B, T, 3, H, W)

A thin wrapper around diffusers' `AutoencoderKLWan` (Wan2.1 §3.1, RELIC §4.1): the diffusers
module holds the weights (so its state-dict names and configs load unchanged); this class owns
the layout conversion, the latent normalisation, input checks and the streaming state
(`streaming.py`). Implements the `LatentDecoder` protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan
from torch import nn

from reverie.tokenizer.config import VAEConfig, get_vae_config
from reverie.tokenizer.layout import check_video, num_latent_frames
from reverie.tokenizer.streaming import StreamingDecoder, StreamingEncoder


class VideoVAE(nn.Module):
    """Wan causal video VAE with Reverie's `(B, T, C, H, W)` layout and latent normalisation.

    Attributes:
        config: the `VAEConfig` it was built from.
        model: the diffusers `AutoencoderKLWan` holding the weights.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.model = AutoencoderKLWan(**config.diffusers_kwargs())
        mean, std = config.latent_mean_std
        shape = (1, 1, config.z_dim, 1, 1)  # broadcast over (B, T, C, H, W)
        self.register_buffer("latents_mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std).view(shape), persistent=False)

    # Weights follow the dtype asked for when a world model is saved (bf16 halves the size).
    storage_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------------ construction
    def with_latent_stats(self, mean: tuple[float, ...], std: tuple[float, ...]) -> VideoVAE:
        """A copy (same weights) whose `encode` also standardises by these per-channel stats."""
        out = VideoVAE(self.config.replace(latents_mean=tuple(mean), latents_std=tuple(std)))
        out.model.load_state_dict(self.model.state_dict())
        return out

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VideoVAE:
        """Randomly initialised VAE of a named preset (`tiny`, `wan2.1`); see `config.py`."""
        return cls(get_vae_config(name, **overrides))

    @classmethod
    def from_diffusers_directory(cls, path: str | Path, subfolder: str | None = "vae") -> VideoVAE:
        """Load a local diffusers Wan VAE (e.g. `Wan2.1-T2V-1.3B-Diffusers/vae`); never downloads.

        Raises:
            FileNotFoundError: if `path` (or its `subfolder`) has no `config.json`.
            ValueError: if the checkpoint uses attention or a non-Wan2.1 layout.
        """
        directory = Path(path) if subfolder is None else Path(path) / subfolder
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"no diffusers VAE config.json under {directory}")
        source = AutoencoderKLWan.from_pretrained(str(directory), local_files_only=True)
        cfg = source.config
        if cfg.attn_scales or cfg.is_residual or cfg.patch_size is not None:
            raise ValueError(
                "only Wan2.1-style VAEs (no attention/residual/patching) are supported"
            )
        config = VAEConfig(
            base_dim=cfg.base_dim,
            z_dim=cfg.z_dim,
            dim_mult=tuple(cfg.dim_mult),
            num_res_blocks=cfg.num_res_blocks,
            temperal_downsample=tuple(cfg.temperal_downsample),
            latents_mean=tuple(float(v) for v in cfg.latents_mean),
            latents_std=tuple(float(v) for v in cfg.latents_std),
            in_channels=cfg.in_channels,
        )
        vae = cls(config)
        vae.model.load_state_dict(source.state_dict())
        return vae

    # -------------------------------------------------------------------------- properties
    @property
    def latent_channels(self) -> int:
        """Latent channels `C_lat` (`z_dim`, 16 for both presets)."""
        return self.config.z_dim

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (8)."""
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (4)."""
        return self.config.temporal_factor

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype; inputs are cast to it and outputs come back in it."""
        return self.model.decoder.conv_in.weight.dtype

    def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """Latent shape of a video shape (raises like `encode` on a bad frame count).

        Shapes: `(B, T, 3, H, W)` -> `(B, 1 + (T - 1) / 4, C_lat, H / 8, W / 8)`.
        """
        batch, frames, _, height, width = video_shape
        s = self.spatial_factor
        t_lat = num_latent_frames(frames, self.temporal_factor)
        return (batch, t_lat, self.latent_channels, height // s, width // s)

    # ------------------------------------------------------------------------ normalisation
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw posterior latents -> model latents: `(z - mean) / std` per channel (Wan2.1).

        Shapes: `(B, T_lat, C_lat, h, w)` -> same, same dtype.
        """
        return ((z.float() - self.latents_mean) / self.latents_std).to(z.dtype)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`, cast to the VAE's dtype. Shapes: `(B, T_lat, C_lat, h, w)`."""
        return (latents.float() * self.latents_std + self.latents_mean).to(self.dtype)

    # ------------------------------------------------------------------------ encode/decode
    def check_video(self, video: torch.Tensor) -> None:
        """Validate pixels for encoding (any frame count; `encode` also checks `T = 1 + 4k`).

        Shapes: video `(B, T, 3, H, W)` float in [-1, 1], `H, W` divisible by 8.

        Raises:
            ValueError: wrong rank or channels, bad spatial size, NaN/Inf.
        """
        check_video(video, self.config.in_channels, self.spatial_factor)

    def encode(
        self, video: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Encode a clip to normalised latents (posterior mean, or a sample if `sample`).

        Shapes:
            video: `(B, T, 3, H, W)` float in [-1, 1], `T = 1 + 4k`, `H, W` divisible by 8.
            returns `(B, 1 + k, C_lat, H / 8, W / 8)` in the VAE's dtype.

        Raises:
            ValueError: wrong rank/channels, `T` not `1 + 4k`, `H` or `W` not divisible by 8,
                NaN/Inf in the input.
        """
        self.check_video(video)
        num_latent_frames(video.shape[1], self.temporal_factor)  # raises on a bad frame count
        return self.start_encoding(sample=sample, generator=generator).step(video)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents (the full clip in one call; same result as streaming).

        Shapes:
            latents: `(B, T_lat, C_lat, h, w)`.
            returns video `(B, 1 + 4 (T_lat - 1), 3, 8h, 8w)` in [-1, 1], the VAE's dtype.

        Raises:
            ValueError: wrong rank/channels, no frames, NaN/Inf.
        """
        return self.start_decoding().step(latents)

    def start_decoding(self) -> StreamingDecoder:
        """A `StreamingDecoder` with an empty causal cache (one per video stream)."""
        return StreamingDecoder(self)

    def start_encoding(
        self, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> StreamingEncoder:
        """A `StreamingEncoder` with an empty causal cache (one per video stream)."""
        return StreamingEncoder(self, sample=sample, generator=generator)
