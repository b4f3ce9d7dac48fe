"""``retrieval``: LongLive-RAG's frame-embedding network (arXiv 2606.02553), trained on clean
latent frames for the ``retrieval`` memory policy.

    reverie train retrieval --config configs/tiny/retrieval.yaml trainer.max_steps=200
    policy = get_policy("retrieval", embed=load_retrieval_embedder("runs/tiny/retrieval"))

The encoder is ``reverie.memory.RetrievalEmbedder`` (stride-2 conv stages, global average
pool, Linear, L2 norm). Training follows LongLive-RAG's ``ae/train.py``: the encoder is the
first half of an **autoencoder** whose decoder (:class:`EmbeddingDecoder`, training only,
never used by the policy) rebuilds each latent frame from its embedding, so the embedding keeps
the frame's content; on top, over sequences of ``loss.sequence_frames`` consecutive frames
``e (B, T, D)``:

    L = λ_rec MSE(dec(e_t), x_t) + λ_Δ L_Δ(e; w=3, m=0.85) + λ_s mean ||e_{t+2} - 2 e_{t+1} + e_t||

``L_Δ`` (Window Temporal Delta loss) penalises cosine similarity above ``m`` between frames up
to ``w`` apart, so near neighbours stop being trivially similar and retrieval looks past the
recent window; the smoothness term keeps the embedding trajectory free of jitter (both in
``reverie.objectives``). LongLive-RAG: AdamW 3e-4, weight decay 1e-4, all weights 1.
Difference: our embedder L2-normalises inside ``forward``, so the decoder and the smoothness term
see unit vectors (LongLive-RAG applies them to the un-normalised Linear output).

Logged diagnostics (``embedder/cos_k{k}``): mean cosine between frames ``k = 1..5`` apart,
``cos_far`` between a sequence's first and last frame, ``cos_other`` between the same time step
of different sequences of the batch.

This module also holds the latent-clip data shared with the ``mag`` stage
(:class:`LatentDataConfig`, :func:`latent_clips`) and :func:`stage_weights`, which finds a
module's weights in a run directory, a checkpoint or a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from reverie.config_utils import from_dict
from reverie.memory import RetrievalEmbedder, RetrievalEmbedderConfig
from reverie.objectives import temporal_smoothness_loss, window_temporal_delta_loss
from reverie.training.checkpoint import latest_checkpoint
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.data import make_loader
from reverie.training.distributed import DistContext
from reverie.training.seeding import mix_seed
from reverie.training.stage import Stage, register_stage


# ------------------------------------------------------------------ latent clips (shared)
@dataclass(frozen=True)
class LatentDataConfig:
    """Clips of clean latent frames: ``latents`` (a ``reverie encode`` directory read with
    ``LatentClipDataset``) or, when None, ``num_samples`` synthetic clips
    (:class:`SmoothLatentClips`).

    Attributes:
        batch_size: global micro-batch size in clips (divisible by the world size).
        latent_size: ``(h, w)`` of the synthetic latents.
        palindrome: palindrome probability of ``LatentClipDataset`` (RELIC §3.4).
        field_grid: synthetic: side of the coarse random grid upsampled into a smooth field.
        speed: synthetic: range of the per-clip angular speed, radians per latent frame.
    """

    latents: Path | None = None
    latent_size: tuple[int, int] = (8, 8)
    num_samples: int = 256
    batch_size: int = 8
    seed: int = 1234
    num_workers: int = 0
    palindrome: float = 0.0
    field_grid: int = 3
    speed: tuple[float, float] = (0.05, 0.25)

    def __post_init__(self) -> None:
        if min(self.num_samples, self.batch_size, self.field_grid, *self.latent_size) < 1:
            raise ValueError("num_samples, batch_size, field_grid and latent_size must be >= 1")
        if not 0.0 <= self.speed[0] <= self.speed[1]:
            raise ValueError(f"speed must be an interval [lo, hi] with 0 <= lo <= hi: {self.speed}")


class SmoothLatentClips(Dataset):
    """Synthetic latent clips with slow temporal structure, deterministic per index.

    Clip ``i`` (from ``Generator(seed + i)``): two smooth random fields ``A, B`` (a
    ``field_grid``-sided normal grid, bicubic-upsampled, standardised per channel) and
    ``x_t = cos(φ + ω t) A + sin(φ + ω t) B`` with ``ω ~ U(speed)``, ``φ ~ U(0, 2π)``: unit
    variance, neighbours similar, distant frames different.

    Shapes:
        item: ``(T, C, h, w)`` float32.
    """

    def __init__(self, cfg: LatentDataConfig, num_frames: int, channels: int, seed: int) -> None:
        self.cfg, self.num_frames, self.channels, self.seed = cfg, num_frames, channels, seed

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the latent frames."""
        return self.cfg.latent_size

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, index))
        grid = self.cfg.field_grid
        coarse = torch.randn(2, self.channels, grid, grid, generator=g)
        fields = F.interpolate(coarse, self.cfg.latent_size, mode="bicubic", align_corners=True)
        mean, std = fields.mean((-2, -1), keepdim=True), fields.std((-2, -1), keepdim=True)
        fields = (fields - mean) / (std + 1e-6)  # (2, C, h, w)
        lo, hi = self.cfg.speed
        omega = lo + (hi - lo) * torch.rand((), generator=g)
        phase = 2 * math.pi * torch.rand((), generator=g)
        angle = phase + omega * torch.arange(self.num_frames)  # (T,)
        return (
            angle.cos()[:, None, None, None] * fields[0]
            + angle.sin()[:, None, None, None] * (fields[1])
        )  # (T, C, h, w)


class LatentClipFrames(Dataset):
    """The latents of ``reverie.training.latents.LatentClipDataset`` clips.

    Shapes:
        item: ``(T, C, h, w)`` float32 (normalised by the dataset's statistics).

    Raises:
        ValueError: the dataset's latent channels are not ``channels``; the dataset's own errors.
    """

    def __init__(self, cfg: LatentDataConfig, num_frames: int, channels: int) -> None:
        from reverie.training.latents import LatentClipDataset  # written alongside this stage

        self.clips = LatentClipDataset(cfg.latents, num_frames, palindrome=cfg.palindrome)
        found = self.clips.latent_shape[0]
        if found != channels:
            raise ValueError(
                f"data.latents {cfg.latents} has {found} channels, the model {channels}"
            )

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of the dataset's latent frames."""
        return tuple(self.clips.latent_shape[1:])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.clips[index].latents[0]  # (T, C, h, w)


def latent_clips(
    cfg: LatentDataConfig, num_frames: int, channels: int, seed: int | None = None
) -> SmoothLatentClips | LatentClipFrames:
    """The clip dataset of ``cfg`` (``LatentClipFrames`` or ``SmoothLatentClips`` with ``seed``,
    default ``cfg.seed``); items ``(num_frames, channels, h, w)``."""
    if cfg.latents is not None:
        return LatentClipFrames(cfg, num_frames, channels)
    return SmoothLatentClips(cfg, num_frames, channels, cfg.seed if seed is None else seed)


def clip_stream(stage: Stage, dataset: Dataset, cfg: LatentDataConfig, start: int) -> Iterator:
    """This rank's infinite, resumable stream of ``(b, T, C, h, w)`` clip batches."""
    loader = make_loader(
        dataset,
        cfg.batch_size,
        rank=stage.dist.rank,
        world_size=stage.dist.world_size,
        seed=cfg.seed,
        start=start,
        num_workers=cfg.num_workers,
    )
    return iter(loader)


def check_data(cfg: LatentDataConfig, dist: DistContext) -> None:
    """Batch size divisible by the ranks; ``latents`` exists.

    Raises:
        ValueError / FileNotFoundError: naming the ``data.*`` key.
    """
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"data.batch_size={cfg.batch_size} is not divisible by {dist.world_size}")
    if cfg.latents is not None and not cfg.latents.exists():
        raise FileNotFoundError(f"data.latents: nothing at {cfg.latents}")


def stage_weights(
    path: str | Path, stage: str, module: str, *, ema: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the weights of ``module`` written by a training run of ``stage``.

    Args:
        path: a run directory (its newest checkpoint), a checkpoint directory, or a
            ``.safetensors`` file inside a checkpoint directory.
        ema: take ``<module>.ema.safetensors`` (needs ``trainer.ema_modules``).

    Returns:
        ``(state_dict, config)``: CPU tensors and the experiment config dict of the run.

    Raises:
        FileNotFoundError: no checkpoint, weights or ``config.json`` there.
        ValueError: the checkpoint belongs to another stage.
    """
    path = Path(path)
    if path.is_file():
        file, ckpt = path, path.parent
    else:
        ckpt = latest_checkpoint(path) or path
        file = ckpt / f"{module}{'.ema' if ema else ''}.safetensors"
    if not file.is_file() or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"no {stage} checkpoint with {file.name} and config.json at {path}")
    stored = json.loads((ckpt / "config.json").read_text())
    if stored["stage"] != stage:
        raise ValueError(f"{ckpt} is a {stored['stage']!r} checkpoint, not {stage!r}")
    return load_file(str(file)), stored["config"]


# ------------------------------------------------------------------------ the stage
@dataclass(frozen=True)
class RetrievalModelConfig:
    """The embedder (``RetrievalEmbedderConfig``: LongLive-RAG's 64/128/256, dim 1024)."""

    embedder: RetrievalEmbedderConfig = field(default_factory=RetrievalEmbedderConfig)


@dataclass(frozen=True)
class RetrievalLossConfig:
    """Loss weights and LongLive-RAG's WTD settings (``window`` w = 3, ``margin`` m = 0.85);
    ``sequence_frames``: consecutive latent frames per training sequence (LongLive-RAG: 8);
    ``max_gap``: largest frame distance of the ``cos_k`` diagnostics."""

    sequence_frames: int = 8
    window: int = 3
    margin: float = 0.85
    reconstruction_weight: float = 1.0
    delta_weight: float = 1.0
    smooth_weight: float = 1.0
    max_gap: int = 5

    def __post_init__(self) -> None:
        if self.window < 1 or self.sequence_frames < max(3, self.window + 1):
            raise ValueError(
                f"need window >= 1 and sequence_frames >= max(3, window + 1), got window="
                f"{self.window}, sequence_frames={self.sequence_frames}"
            )
        weights = (self.reconstruction_weight, self.delta_weight, self.smooth_weight)
        if min(weights) < 0 or self.max_gap < 1:
            raise ValueError("loss weights must be >= 0 and max_gap >= 1")


@dataclass(frozen=True)
class RetrievalConfig:
    """Experiment config of the ``retrieval`` stage (AdamW 3e-4, wd 1e-4: LongLive-RAG)."""

    trainer: TrainerConfig
    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    loss: RetrievalLossConfig = field(default_factory=RetrievalLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(3e-4, weight_decay=1e-4))


class EmbeddingDecoder(nn.Module):
    """The autoencoder's decoder (training only): embedding -> latent frame, mirroring the
    embedder (LongLive-RAG ``ae/model.py``: Linear + SiLU to the bottleneck grid, then per stage
    nearest 2x upsampling, Conv3x3, GroupNorm, SiLU; a last upsample + Conv3x3 to the latent
    channels; cropped to ``size``).

    Shapes:
        forward: ``(N, dim)`` -> ``(N, in_channels, h, w)``.
    """

    def __init__(self, cfg: RetrievalEmbedderConfig, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        h, w = size
        for _ in cfg.channels:  # Conv3x3, stride 2, padding 1
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.grid = (cfg.channels[-1], h, w)
        self.fc = nn.Sequential(nn.Linear(cfg.dim, math.prod(self.grid)), nn.SiLU())
        rev, layers = cfg.channels[::-1], []
        for a, b in zip(rev, rev[1:], strict=False):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, padding=1)]
            layers += [nn.GroupNorm(cfg.groups, b), nn.SiLU()]
        layers += [nn.Upsample(scale_factor=2), nn.Conv2d(rev[-1], cfg.in_channels, 3, padding=1)]
        self.up = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` -> ``(N, C, h, w)`` reconstructed latent frames."""
        x = self.up(self.fc(e).view(-1, *self.grid))  # (N, C, h', w') with h' >= h
        return x[..., : self.size[0], : self.size[1]]


def cosine_diagnostics(e: torch.Tensor, max_gap: int) -> dict[str, torch.Tensor]:
    """Retrieval diagnostics of per-frame embeddings (no grad).

    Shapes:
        e: ``(B, T, D)``. Returns float32 scalars ``cos_k{k}`` (frames ``k`` apart,
        ``k = 1..min(max_gap, T - 1)``), ``cos_far`` (first vs last frame) and, for ``B > 1``,
        ``cos_other`` (same time step, another sequence of the batch).
    """
    e = F.normalize(e.detach().float(), dim=-1)
    out = {}
    for k in range(1, min(max_gap, e.shape[1] - 1) + 1):
        out[f"cos_k{k}"] = (e[:, k:] * e[:, :-k]).sum(-1).mean()
    out["cos_far"] = (e[:, 0] * e[:, -1]).sum(-1).mean()
    if e.shape[0] > 1:
        out["cos_other"] = (e * e.roll(1, dims=0)).sum(-1).mean()
    return out


@register_stage("retrieval")
class RetrievalStage(Stage):
    """LongLive-RAG's embedding autoencoder; modules ``embedder`` (what the retrieval policy
    loads, :func:`load_retrieval_embedder`) and ``decoder``; one optimizer ``embedder`` over
    both."""

    config_class = RetrievalConfig

    @classmethod
    def check_config(cls, config: RetrievalConfig, dist: DistContext) -> None:
        """``data`` (:func:`check_data`).

        Raises:
            ValueError / FileNotFoundError: naming the key.
        """
        check_data(config.data, dist)

    def __init__(self, config: RetrievalConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        cfg = config.model.embedder
        frames = config.loss.sequence_frames
        self.dataset = latent_clips(config.data, frames, cfg.in_channels)
        self.embedder = dist.wrap(RetrievalEmbedder(cfg))
        decoder = EmbeddingDecoder(cfg, self.dataset.latent_size)
        self.decoder = dist.wrap(decoder)
        params = [*self.embedder.parameters(), *self.decoder.parameters()]
        self.opt, self.sched = build_optimizer(params, config.optim)

    def modules(self) -> dict[str, nn.Module]:
        """``{"embedder", "decoder"}``."""
        return {"embedder": self.embedder, "decoder": self.decoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"embedder": AdamW}`` over the embedder and the decoder."""
        return {"embedder": self.opt}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """``{"embedder": warm-up}``."""
        return {"embedder": self.sched}

    def batches(self, start: int) -> Iterator[torch.Tensor]:
        """Sequences ``(b, T, C, h, w)`` of consecutive clean latent frames."""
        return clip_stream(self, self.dataset, self.config.data, start)

    def loss(self, update: str, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted sum (module docstring) and its parts ``reconstruction``, ``delta``,
        ``smooth``, plus the cosine diagnostics; float32 scalars.

        Shapes: batch ``(B, T, C, h, w)``.
        """
        cfg = self.config.loss
        x = batch.to(self.dist.device)  # (B, T, C, h, w)
        frames = rearrange(x, "b t c h w -> (b t) c h w")
        e = self.embedder(frames)  # (B T, D), unit norm
        recon = F.mse_loss(self.decoder(e).float(), frames.float())
        seq = e.unflatten(0, x.shape[:2])  # (B, T, D)
        delta = window_temporal_delta_loss(seq, cfg.window, cfg.margin)
        smooth = temporal_smoothness_loss(seq)
        loss = (
            cfg.reconstruction_weight * recon
            + cfg.delta_weight * delta
            + cfg.smooth_weight * smooth
        )
        parts = {
            "reconstruction": recon.detach(),
            "delta": delta.detach(),
            "smooth": smooth.detach(),
        }
        return {"loss": loss, **parts, **cosine_diagnostics(seq, cfg.max_gap)}


def load_retrieval_embedder(
    path: str | Path, *, ema: bool = False, device: str | torch.device = "cpu"
) -> RetrievalEmbedder:
    """The trained embedder of a ``retrieval`` run, frozen, for ``get_policy("retrieval",
    embed=...)``.

    Args:
        path: run directory (newest checkpoint), checkpoint directory or ``embedder.safetensors``.
        ema: load the EMA weights (``trainer.ema_modules: [embedder]``).

    Returns:
        ``RetrievalEmbedder`` in eval mode without grad: ``(B, C, h, w) -> (B, dim)``, unit norm.

    Raises:
        FileNotFoundError / ValueError: see :func:`stage_weights`.
    """
    tensors, config = stage_weights(path, "retrieval", "embedder", ema=ema)
    cfg = from_dict(RetrievalEmbedderConfig, config["model"]["embedder"], "model.embedder")
    model = RetrievalEmbedder(cfg)
    model.load_state_dict(tensors)
    return model.to(device).eval().requires_grad_(False)
