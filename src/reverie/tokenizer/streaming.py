"""Streaming (causal) encode and decode with the Wan VAE, keeping the feature cache across calls.

The Wan VAE is causal in time: every temporal convolution sees only the current and earlier
frames, and diffusers' `AutoencoderKLWan` decodes one latent frame at a time, handing each
causal conv the last frames of its previous input through a list (`feat_cache`) and a running
index (`feat_idx`). Its `decode`/`encode` reset that list at the start and end of every call
(`clear_cache`), so a video cannot be decoded across calls with them. Here the list lives in an
explicit per-stream object instead of on the module (STYLE §7), so:

- `StreamingDecoder.step(latents)` decodes new latent frames as they are generated (RELIC §4.5:
  decode each generated block immediately) and equals one full decode of the concatenation;
- `StreamingEncoder.step(frames)` encodes frames as they arrive (first frame alone, then groups of
  `temporal_factor`), equal to one full encode;
- several streams of the same VAE can run side by side (nothing is stored on the module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch import nn

from reverie.tokenizer.layout import check_latents, from_wan_layout, join_pending, to_wan_layout

if TYPE_CHECKING:
    from reverie.tokenizer.vae import VideoVAE

# diffusers' DiagonalGaussianDistribution clamps the posterior log-variance to this range.
LOGVAR_RANGE = (-30.0, 20.0)


class CausalFeatureCache:
    """The per-conv feature cache of one VAE half (encoder or decoder) for one stream.

    Attributes:
        features: one entry per `WanCausalConv3d` of the half, in call order: None before the
            first chunk, then the last (up to 2) input frames of that conv, `(B, C, <=2, h, w)`
            (diffusers' own format, including its `"Rep"` marker for first-chunk upsampling).
        chunks: how many chunks have gone through (the first chunk is special in Wan's
            temporal up/downsampling).
    """

    def __init__(self, module: nn.Module) -> None:
        num_convs = sum(isinstance(m, WanCausalConv3d) for m in module.modules())
        self.features: list[torch.Tensor | str | None] = [None] * num_convs
        self.chunks = 0

    def run(self, module: nn.Module, chunk: torch.Tensor, **kwargs) -> torch.Tensor:
        """Run `module` (diffusers' `WanEncoder3d`/`WanDecoder3d`) on one chunk, updating the cache.

        Shapes: chunk `(B, C, t, h, w)` (Wan layout, boundary only).
        """
        out = module(chunk, feat_cache=self.features, feat_idx=[0], **kwargs)
        self.chunks += 1
        return out


class StreamingDecoder:
    """Decode latent frames incrementally; concatenated outputs == `VideoVAE.decode` of all.

    The first latent frame decodes to 1 video frame, every later one to `temporal_factor` (4).
    Create with `VideoVAE.start_decoding()`; one object per video stream.
    """

    def __init__(self, vae: VideoVAE) -> None:
        self.vae = vae
        self.cache = CausalFeatureCache(vae.model.decoder)
        self.batch_size: int | None = None

    @property
    def num_decoded(self) -> int:
        """Latent frames decoded so far."""
        return self.cache.chunks

    def step(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode the next latent frames of the stream.

        Shapes:
            latents: `(B, n, C_lat, h, w)`, normalised (as `VideoVAE.encode` returns), `n >= 1`.
            returns video `(B, m, 3, 8h, 8w)` in [-1, 1] (clamped), the VAE's dtype, with
            `m = 1 + 4 (n - 1)` on the first call and `m = 4 n` afterwards.

        Raises:
            ValueError: on bad latents (`check_latents`), no frames, or a batch-size change.
        """
        vae = self.vae
        check_latents(latents, vae.latent_channels)
        if latents.shape[1] == 0:
            raise ValueError("step needs at least one latent frame")
        if self.batch_size is None:
            self.batch_size = latents.shape[0]
        elif latents.shape[0] != self.batch_size:
            raise ValueError(f"batch size changed from {self.batch_size} to {latents.shape[0]}")
        z = to_wan_layout(vae.denormalize(latents))  # (B, C_lat, n, h, w)
        z = vae.model.post_quant_conv(z)  # 1x1x1 conv: per frame, no temporal context
        frames = []
        for i in range(z.shape[2]):
            first = self.cache.chunks == 0
            frames.append(
                self.cache.run(vae.model.decoder, z[:, :, i : i + 1], first_chunk=first)
            )  # (B, 3, 1 | 4, H, W)
        video = torch.cat(frames, dim=2).clamp(-1.0, 1.0)  # (B, 3, m, H, W)
        return from_wan_layout(video)  # (B, m, 3, H, W)


class StreamingEncoder:
    """Encode video frames incrementally; concatenated outputs == `VideoVAE.encode` of all.

    Frames are buffered until a full chunk is available: the first latent frame encodes video
    frame 0 alone, every later one the next `temporal_factor` (4) frames (Wan2.1 §3.1).
    Create with `VideoVAE.start_encoding(...)`; one object per video stream.
    """

    def __init__(
        self, vae: VideoVAE, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> None:
        self.vae = vae
        self.sample = sample
        self.generator = generator
        self.cache = CausalFeatureCache(vae.model.encoder)
        self.pending: torch.Tensor | None = None  # (B, p, 3, H, W) frames not yet encoded

    @property
    def num_encoded(self) -> int:
        """Latent frames produced so far."""
        return self.cache.chunks

    @property
    def num_pending(self) -> int:
        """Buffered video frames waiting for a full chunk."""
        return 0 if self.pending is None else self.pending.shape[1]

    def _chunk_size(self) -> int:
        return 1 if self.cache.chunks == 0 else self.vae.temporal_factor

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Add video frames; encode every complete chunk.

        Shapes:
            frames: `(B, n, 3, H, W)` in [-1, 1], `H, W` divisible by 8, any `n >= 0`.
            returns normalised latents `(B, k, C_lat, H/8, W/8)` in the VAE's dtype, `k >= 0`
            (posterior mean, or a posterior sample when `sample=True`).

        Raises:
            ValueError: on bad frames (`check_video`) or a change of batch/spatial size.
        """
        vae = self.vae
        vae.check_video(frames)
        frames = join_pending(self.pending, frames)  # (B, p + n, 3, H, W)
        x = to_wan_layout(frames.to(vae.dtype))  # (B, 3, p + n, H, W)
        outputs, start = [], 0
        while x.shape[2] - start >= self._chunk_size():
            end = start + self._chunk_size()
            outputs.append(
                self.cache.run(vae.model.encoder, x[:, :, start:end])
            )  # (B, 2C, 1, h, w)
            start = end
        self.pending = frames[:, start:] if start < frames.shape[1] else None
        if not outputs:
            batch, _, _, height, width = frames.shape
            factor = vae.spatial_factor
            shape = (batch, 0, vae.latent_channels, height // factor, width // factor)
            return frames.new_zeros(shape, dtype=vae.dtype)
        moments = vae.model.quant_conv(torch.cat(outputs, dim=2))  # (B, 2 C_lat, k, h, w)
        mean, logvar = moments.chunk(2, dim=1)  # (B, C_lat, k, h, w) each
        z = mean
        if self.sample:
            std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
            device = mean.device if self.generator is None else self.generator.device
            noise = torch.randn(mean.shape, generator=self.generator, device=device)
            z = mean + std * noise.to(mean.device, mean.dtype)  # generator's device: seeded
        return vae.normalize(from_wan_layout(z))  # (B, k, C_lat, h, w)
