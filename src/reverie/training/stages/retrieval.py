"""``retrieval``: LongLive-RAG's frame-embedding network (arXiv 2606.02553), trained on clean
latent frames for the ``retrieval`` memory policy.

    reverie train retrieval --config configs/tiny/retrieval.yaml trainer.max_steps=200
    policy = get_policy("retrieval", embed=retrieval_embedder_from_run("runs/tiny/retrieval"))

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

The clips come from ``reverie.training.frame_clips`` (shared with the ``mag`` stage); the
trained embedder is packaged into a world model by ``reverie.training.export``
(:meth:`RetrievalStage.export_component`, the policy's ``retrieval_embedder`` component).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from reverie.config_utils import from_dict
from reverie.memory import RetrievalEmbedder, RetrievalEmbedderConfig
from reverie.objectives import temporal_smoothness_loss, window_temporal_delta_loss
from reverie.training.common import stage_weights
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.distributed import DistContext
from reverie.training.frame_clips import FrameClipsConfig, check_data, latent_clips
from reverie.training.stage import Stage, register_stage


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
class RetrievalStageConfig:
    """Experiment config of the ``retrieval`` stage (AdamW 3e-4, wd 1e-4: LongLive-RAG)."""

    trainer: TrainerConfig
    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    data: FrameClipsConfig = field(default_factory=FrameClipsConfig)
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
    runs with, :func:`retrieval_embedder_from_run`) and ``decoder``; one optimizer
    ``embedder`` over both."""

    config_class = RetrievalStageConfig
    component = "retrieval_embedder"

    @classmethod
    def check_config(cls, config: RetrievalStageConfig, dist: DistContext) -> None:
        """``data`` (:func:`check_data`).

        Raises:
            ValueError / FileNotFoundError: naming the key.
        """
        check_data(config.data, dist)

    def __init__(self, config: RetrievalStageConfig, dist: DistContext) -> None:
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
        return self.stream(self.dataset, self.config.data, start)

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

    @classmethod
    def export_component(cls, run: Path) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
        """The run's embedder (:func:`retrieval_embedder_from_run`, not EMA); no options."""
        return retrieval_embedder_from_run(run), {}


def retrieval_embedder_from_run(
    path: str | Path, *, ema: bool = False, device: str | torch.device = "cpu"
) -> RetrievalEmbedder:
    """The trained embedder of a ``retrieval`` run, frozen, for ``get_policy("retrieval",
    embed=...)`` (a packaged world model stores it with ``reverie.memory.save_retrieval_embedder``).

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
