"""Latent-frame embeddings for retrieval memory (LongLive-RAG arXiv 2606.02553).

An embedding function maps one clean latent frame to an L2-normalised vector; retrieval scores
history frames by cosine similarity to the newest frame's embedding. Two are provided:

- `PooledLatentEmbedding`: parameter-free fallback, the latent average-pooled to a small
  spatial grid, flattened and L2-normalised.
- `RetrievalEmbedder`: LongLive-RAG's small conv encoder (stride-2 conv stages 64/128/256,
  global average pool, Linear to 1024, L2 norm). It is trained later (reconstruction + the
  Window Temporal Delta loss `L_Δ = (1/w) Σ_k mean_t max(0, cos(e_{t+k}, e_t) - m)`, w = 3,
  m = 0.85, plus a smoothness term); only the module lives here.

The trained embedder is the `retrieval` policy's learned component: a packaged world model holds
it in `retrieval/` (`embedder.safetensors` + `embedder_config.json`, `save_retrieval_embedder` /
`load_retrieval_embedder`); the `retrieval` training stage trains it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from reverie.config_utils import from_dict, to_dict
from reverie.io import atomic_write_json, save_safetensors

WEIGHTS_NAME, CONFIG_NAME = "embedder.safetensors", "embedder_config.json"

# `(B, C, H, W)` latent frames -> `(B, D)` L2-normalised embeddings.
EmbeddingFn = Callable[[torch.Tensor], torch.Tensor]


class PooledLatentEmbedding:
    """Parameter-free frame embedding: average-pool to `grid x grid`, flatten, L2-normalise.

    Shapes:
        call: `(B, C, H, W)` latents (any float dtype) -> `(B, C * grid * grid)` float32,
        unit L2 norm (all-zero input gives a zero vector).

    Raises:
        ValueError: if `grid < 1`, or (on call) the input is not 4-D.
    """

    def __init__(self, grid: int = 4) -> None:
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = grid

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) latents, got {tuple(latents.shape)}")
        pooled = F.adaptive_avg_pool2d(latents.float(), self.grid)  # (B, C, g, g)
        return F.normalize(pooled.flatten(1), dim=-1)  # (B, C g g)


@dataclass(frozen=True)
class RetrievalEmbedderConfig:
    """LongLive-RAG's embedding network.

    Attributes:
        in_channels: latent channels (Wan VAE: 16).
        channels: output channels of the stride-2 conv stages (64, 128, 256).
        dim: embedding size after the final Linear (1024).
        groups: GroupNorm groups after each conv (must divide every stage's channels).
    """

    in_channels: int = 16
    channels: tuple[int, ...] = (64, 128, 256)
    dim: int = 1024
    groups: int = 8

    def __post_init__(self) -> None:
        if not self.channels or any(c % self.groups for c in self.channels):
            raise ValueError(f"groups {self.groups} must divide every channel in {self.channels}")
        if self.in_channels < 1 or self.dim < 1:
            raise ValueError("in_channels and dim must be >= 1")


class RetrievalEmbedder(nn.Module):
    """Conv encoder of latent frames for retrieval (LongLive-RAG's query/key embedding).

    `[Conv3x3 stride 2 -> GroupNorm -> SiLU] x len(channels) -> global average pool -> Linear
    -> L2 normalise`. Untrained here; usable as the `embed` of the retrieval policy.

    Shapes:
        forward: `(B, C, H, W)` latents -> `(B, dim)` in the module's dtype, unit L2 norm.
    """

    def __init__(self, config: RetrievalEmbedderConfig | None = None) -> None:
        super().__init__()
        self.config = RetrievalEmbedderConfig() if config is None else config
        cfg = self.config
        stages, in_ch = [], cfg.in_channels
        for ch in cfg.channels:
            stages += [
                nn.Conv2d(in_ch, ch, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(cfg.groups, ch),
                nn.SiLU(),
            ]
            in_ch = ch
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Linear(in_ch, cfg.dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Embed latent frames. Shapes: `(B, C, H, W)` -> `(B, dim)`, unit L2 norm."""
        x = self.stages(latents.to(self.proj.weight.dtype))  # (B, C_last, H', W')
        x = x.mean(dim=(-2, -1))  # (B, C_last) global average pool
        return F.normalize(self.proj(x), dim=-1)  # (B, dim)


def save_retrieval_embedder(embedder: RetrievalEmbedder, directory: str | Path) -> Path:
    """Write `directory/embedder.safetensors` (in the embedder's dtype) and
    `directory/embedder_config.json`; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(directory / WEIGHTS_NAME, embedder.state_dict())
    atomic_write_json(directory / CONFIG_NAME, to_dict(embedder.config))
    return directory


def load_retrieval_embedder(
    directory: str | Path, device: str | torch.device = "cpu"
) -> RetrievalEmbedder:
    """The embedder `save_retrieval_embedder` wrote, in float32 on `device`.

    Raises:
        FileNotFoundError: a missing file. ValueError / RuntimeError: a config or weights that
            do not fit.
    """
    directory = Path(directory)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing")
    config = from_dict(RetrievalEmbedderConfig, json.loads((directory / CONFIG_NAME).read_text()))
    embedder = RetrievalEmbedder(config)
    embedder.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    return embedder.float().to(device)
