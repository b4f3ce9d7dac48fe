"""``toy``: the training infrastructure's smoke stage — a small MLP regressing a fixed random
teacher network on synthetic data. It needs no data, VAE or backbone, runs in seconds on a CPU,
and exercises everything a real stage uses (config, data stream, autocast, EMA, checkpoints,
resume, DDP/FSDP), which is why the training tests use it.

    reverie train toy --config configs/toy.yaml trainer.max_steps=50
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from reverie.training.config import OptimConfig, TrainerConfig
from reverie.training.data import check_dataset
from reverie.training.distributed import DistContext
from reverie.training.stage import SingleModuleStage, register_stage


@dataclass(frozen=True)
class ToyModelConfig:
    """The student MLP: ``depth`` hidden layers of ``hidden`` units (GELU, optional dropout)."""

    in_dim: int = 8
    hidden: int = 32
    depth: int = 2
    out_dim: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.in_dim, self.hidden, self.depth, self.out_dim) < 1:
            raise ValueError("in_dim, hidden, depth and out_dim must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ToyDataConfig:
    """Synthetic regression data.

    Attributes:
        num_samples: dataset size.
        batch_size: global micro-batch size (all ranks together).
        noise: std of the label noise.
        jitter: std of per-sample input noise drawn at load time (a stand-in for data
            augmentation; it is seeded per sample, so resume stays exact).
        seed: seed of the inputs, the teacher network and the epoch order.
        num_workers: DataLoader workers.
        dataset: optional rendered dataset to validate before training (demonstrates the
            ``Stage.check_config`` hook; the toy data does not use it).
        resolution: the frame side the ``dataset`` must have.
    """

    num_samples: int = 512
    batch_size: int = 32
    noise: float = 0.01
    jitter: float = 0.0
    seed: int = 1234
    num_workers: int = 0
    dataset: Path | None = None
    resolution: int = 64

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.noise < 0 or self.jitter < 0 or self.num_workers < 0:
            raise ValueError("noise, jitter and num_workers must be >= 0")


@dataclass(frozen=True)
class ToyStageConfig:
    """Experiment config of the ``toy`` stage."""

    trainer: TrainerConfig
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)


class ToyMLP(nn.Module):
    """``x (B, in_dim) -> (B, out_dim)``."""

    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = cfg.in_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.net(x)


class SyntheticRegression(Dataset):
    """``(x, y)`` pairs, ``x ~ N(0, I)`` and ``y = teacher(x) + noise``; item ``i`` adds
    ``jitter * N(0, I)`` to ``x`` from torch's global RNG.

    Shapes:
        item: ``x (in_dim,)`` float32, ``y (out_dim,)`` float32.
    """

    def __init__(self, model: ToyModelConfig, data: ToyDataConfig) -> None:
        g = torch.Generator().manual_seed(data.seed)
        self.x = torch.randn(data.num_samples, model.in_dim, generator=g)
        w1 = torch.randn(model.in_dim, 16, generator=g) / model.in_dim**0.5
        w2 = torch.randn(16, model.out_dim, generator=g) / 4.0
        noise = data.noise * torch.randn(data.num_samples, model.out_dim, generator=g)
        self.y = torch.tanh(self.x @ w1) @ w2 + noise
        self.jitter = data.jitter

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.jitter:
            x = x + self.jitter * torch.randn(x.shape)
        return x, self.y[i]


@register_stage("toy")
class ToyStage(SingleModuleStage):
    """Mean-squared-error regression of :class:`ToyMLP` on :class:`SyntheticRegression`; one
    optimizer named ``model``."""

    key = "model"

    config_class = ToyStageConfig

    @classmethod
    def check_config(cls, config: ToyStageConfig, dist: DistContext) -> None:
        """``data.batch_size`` divisible by the world size; ``data.dataset`` (if set) has
        ``data.resolution``."""
        if config.data.batch_size % dist.world_size:
            raise ValueError(
                f"data.batch_size={config.data.batch_size} is not divisible by the "
                f"{dist.world_size} ranks"
            )
        if config.data.dataset is not None:
            check_dataset(config.data.dataset, config.data.resolution)

    def __init__(self, config: ToyStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        self.model = self.train_module(dist.wrap(ToyMLP(config.model)), config.optim)
        self.dataset = SyntheticRegression(config.model, config.data)

    def batches(self, start: int) -> Iterator[list[torch.Tensor]]:
        """``[x (b, in_dim), y (b, out_dim)]`` with ``b = data.batch_size / world_size``."""
        data = self.config.data
        return self.stream(self.dataset, data, start)

    def loss(self, update: str, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss": MSE(model(x), y)}`` (float32 even under bf16 autocast)."""
        x, y = (t.to(self.dist.device) for t in batch)  # (b, in_dim), (b, out_dim)
        return {"loss": F.mse_loss(self.model(x).float(), y)}

    def samples(self, batch: list[torch.Tensor]) -> int:
        """Rows of ``x``."""
        return len(batch[0])
