"""``vae``: train the video tokenizer (Wan2.1's causal 3D VAE, ``tiny`` preset) on rendered clips.

    reverie train vae --config configs/tiny/vae.yaml data.dataset=/tmp/tinydata
    reverie encode --data /tmp/tinydata --vae runs/tiny/vae --out /tmp/tinylat

Objective (a beta-VAE, Wan2.1 §3.1 without its perceptual and GAN terms, which need pretrained
networks we do not ship): ``L = rec(x̂, x) + kl_weight * KL(q(z|x) || N(0, I))`` with

- ``rec`` = mean absolute error (``l1``, default: sharper than MSE on our flat-shaded worlds,
  and what Wan's VAE uses) or mean squared error (``mse``) over pixels in [-1, 1];
- ``KL`` = ``0.5 mean(mu^2 + sigma^2 - 1 - log sigma^2)`` per latent element (the sum over
  elements divided by their count), so ``kl_weight`` does not depend on the clip size.

The decoder output is *not* clamped during training (a clamp would stop the gradient of
overshooting pixels); PSNR (logged as ``vae/psnr``, dB, peak-to-peak 2) is measured on the
clamped reconstruction, as the tokenizer's ``decode`` returns it. Clips of ``1 + 4k`` frames
come from :class:`reverie.data.ClipDataset`. The checkpoint's ``vae.safetensors`` holds a
``VideoVAE`` state dict; ``reverie encode`` reads it (``training/encode.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from reverie.data import Batch
from reverie.metrics import psnr
from reverie.training.config import OptimConfig, TrainerConfig
from reverie.training.data import check_dataset
from reverie.training.distributed import DistContext
from reverie.training.latents import TEMPORAL_FACTOR
from reverie.training.stage import SingleModuleStage, register_stage

# Peak-to-peak range of pixels in [-1, 1], the "MAX" of PSNR.
PIXEL_RANGE = 2.0


@dataclass(frozen=True)
class VAEModelConfig:
    """Which tokenizer to train: a ``reverie.tokenizer`` preset (``tiny``, ``wan2.1``)."""

    preset: str = "tiny"


@dataclass(frozen=True)
class VAELossConfig:
    """Reconstruction and KL terms (module docstring).

    Attributes:
        reconstruction: ``l1`` or ``mse`` over pixels in [-1, 1].
        kl_weight: weight of the per-element mean KL (>= 0).
        sample_posterior: decode ``z ~ q(z|x)`` (True, a VAE) or the posterior mean.
    """

    reconstruction: Literal["l1", "mse"] = "l1"
    kl_weight: float = 1e-4
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")


@dataclass(frozen=True)
class VAEDataConfig:
    """Training clips from a rendered dataset.

    Attributes:
        dataset: directory written by ``reverie render``.
        resolution: frame side the dataset must have, pixels (a multiple of 8).
        clip_frames: frames per clip, ``1 + 4k``.
        batch_size: global micro-batch size (all ranks together).
        clips_per_episode: clips drawn per episode per epoch.
        palindrome: probability of palindrome augmentation (RELIC §3.4).
        seed: seed of the epoch order and clip crops.
        num_workers: DataLoader workers.
    """

    dataset: Path
    resolution: int = 64
    clip_frames: int = 9
    batch_size: int = 2
    clips_per_episode: int = 16
    palindrome: float = 0.0
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.clip_frames < 1 or (self.clip_frames - 1) % TEMPORAL_FACTOR:
            raise ValueError(
                f"data.clip_frames must be 1 + 4k (the causal VAE), got {self.clip_frames}"
            )
        if min(self.resolution, self.batch_size, self.clips_per_episode) < 1:
            raise ValueError("resolution, batch_size and clips_per_episode must be >= 1")


@dataclass(frozen=True)
class VAEStageConfig:
    """Experiment config of the ``vae`` stage."""

    trainer: TrainerConfig
    data: VAEDataConfig
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


class VAEAutoencoder(nn.Module):
    """The weights of a ``VideoVAE`` (``model``: diffusers' ``AutoencoderKLWan``, so the state
    dict loads into a ``VideoVAE``) with a differentiable autoencoding ``forward``.

    ``reverie.tokenizer`` (and with it diffusers, seconds to import) is imported when one is
    built, not when the stage registry is.
    """

    def __init__(self, preset: str) -> None:
        super().__init__()
        from reverie.tokenizer import VideoVAE

        vae = VideoVAE.from_preset(preset)
        self.config, self.model = vae.config, vae.model

    def forward(
        self, video: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode (chunks of 1, 4, 4, ... frames), sample the posterior, decode (one latent
        frame at a time), as the streaming tokenizer does, keeping the graph.

        Shapes:
            video: ``(B, T, 3, H, W)`` in [-1, 1], ``T = 1 + 4k``.
            returns ``(reconstruction (B, T, 3, H, W)`` unclamped, posterior ``mean`` and
            ``logvar`` ``(B, 1 + k, C_lat, H/8, W/8))``, raw (not normalised) latents.

        Raises:
            ValueError: a bad video (see ``VideoVAE.encode``).
        """
        from reverie.tokenizer.layout import (
            check_video,
            from_wan_layout,
            num_latent_frames,
            to_wan_layout,
        )
        from reverie.tokenizer.streaming import LOGVAR_RANGE, CausalFeatureCache

        cfg = self.config
        check_video(video, cfg.in_channels, cfg.spatial_factor)
        num_latent_frames(video.shape[1], cfg.temporal_factor)
        x = to_wan_layout(video.to(self.model.encoder.conv_in.weight.dtype))  # (B, 3, T, H, W)
        rest = x[:, :, 1:].split(cfg.temporal_factor, dim=2) if x.shape[2] > 1 else ()
        chunks = [x[:, :, :1], *rest]  # T = 1 (single images): the first chunk only
        encoder = CausalFeatureCache(self.model.encoder)
        h = torch.cat([encoder.run(self.model.encoder, c) for c in chunks], dim=2)
        mean, logvar = self.model.quant_conv(h).chunk(2, dim=1)  # (B, C_lat, t, h, w) each
        logvar = logvar.clamp(*LOGVAR_RANGE)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        z = self.model.post_quant_conv(z)  # (B, C_lat, t, h, w)
        decoder = CausalFeatureCache(self.model.decoder)
        frames = [
            decoder.run(self.model.decoder, z[:, :, i : i + 1], first_chunk=i == 0)
            for i in range(z.shape[2])
        ]  # (B, 3, 1 | 4, H, W) each
        recon = torch.cat(frames, dim=2)  # (B, 3, T, H, W)
        return from_wan_layout(recon), from_wan_layout(mean), from_wan_layout(logvar)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean per-element ``KL(N(mean, exp(logvar)) || N(0, 1))`` (Kingma & Welling arXiv
    1312.6114 appendix B). Shapes: any, equal; returns a float32 scalar."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


@register_stage("vae")
class VAEStage(SingleModuleStage):
    """Reconstruction + KL training of :class:`VAEAutoencoder`; one optimizer named ``vae``."""

    key = "vae"

    config_class = VAEStageConfig

    @classmethod
    def check_config(cls, config: VAEStageConfig, dist: DistContext) -> None:
        """The dataset exists with ``data.resolution`` (a multiple of the VAE's 8) and episodes
        of at least ``data.clip_frames``; the batch splits over the ranks.

        Raises:
            FileNotFoundError / ValueError / KeyError: naming the key.
        """
        from reverie.tokenizer import get_vae_config

        data = config.data
        factor = get_vae_config(config.model.preset).spatial_factor
        if data.resolution % factor:
            raise ValueError(f"data.resolution={data.resolution} is not a multiple of {factor}")
        if data.batch_size % dist.world_size:
            raise ValueError(f"data.batch_size={data.batch_size} does not split over the ranks")
        check_dataset(data.dataset, data.resolution, data.clip_frames)

    def __init__(self, config: VAEStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        self.vae = self.train_module(dist.wrap(VAEAutoencoder(config.model.preset)), config.optim)

    def batches(self, start: int) -> Iterator[Batch]:
        """:class:`reverie.data.Batch` clips ``(b, clip_frames, 3, H, W)``, ``b`` = per rank."""
        from reverie.data import ClipDataset

        data = self.config.data
        dataset = ClipDataset(
            data.dataset,
            data.clip_frames,
            palindrome=data.palindrome,
            clips_per_episode=data.clips_per_episode,
            resolution=data.resolution,
        )
        return self.stream(dataset, data, start, collate_fn=Batch.collate)

    def loss(self, update: str, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"loss", "reconstruction", "kl", "psnr"}`` of one micro-batch (float32)."""
        cfg = self.config.loss
        video = batch.frames.to(self.dist.device)  # (b, T, 3, H, W)
        recon, mean, logvar = self.vae(video, cfg.sample_posterior)
        recon = recon.float()
        if cfg.reconstruction == "l1":
            rec = (recon - video).abs().mean()
        else:
            rec = (recon - video).square().mean()
        kl = kl_divergence(mean, logvar)
        return {
            "loss": rec + cfg.kl_weight * kl,
            "reconstruction": rec.detach(),
            "kl": kl.detach(),
            "psnr": psnr(  # over the whole micro-batch
                recon.detach().clamp(-1, 1).flatten()[None], video.flatten()[None], PIXEL_RANGE
            )[0],
        }

    def samples(self, batch: Batch) -> int:
        """Clips in the micro-batch."""
        return len(batch)


def vae_config_of(stage_config: dict) -> tuple[str, int]:
    """``(preset, resolution)`` of a ``vae`` stage config as stored in a checkpoint."""
    return stage_config["model"]["preset"], int(stage_config["data"]["resolution"])
