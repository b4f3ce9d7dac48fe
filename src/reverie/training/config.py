"""Configs shared by every training stage: the loop (`TrainerConfig`) and AdamW (`OptimConfig`).

A stage's experiment config is one frozen dataclass that composes these with its own sections
(``model``, ``data``, ...) and must have a ``trainer: TrainerConfig`` field. YAML sets values:

    trainer: {run_dir: runs/toy, max_steps: 200, precision: bf16, checkpoint_every: 50}
    optim: {lr: 3.0e-4, betas: [0.0, 0.999]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch


@dataclass(frozen=True)
class TrainerConfig:
    """The shared training loop (:class:`reverie.training.trainer.Trainer`).

    Attributes:
        run_dir: directory of checkpoints (``checkpoints/step_XXXXXXXX``), ``metrics.jsonl`` and
            ``config.json``.
        max_steps: optimizer steps to reach (a step = ``grad_accum`` micro-batches and every
            update the stage schedules for that step).
        seed: seeds python, numpy and torch (modules are built from ``seed`` on every rank;
            the training streams of rank ``r`` use ``seed + r``).
        precision: ``fp32``, or ``bf16`` autocast (weights and optimizer state stay fp32).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        distributed: ``none``, ``ddp`` (DistributedDataParallel) or ``fsdp`` (FSDP2
            ``fully_shard``); the latter two need a ``torchrun`` launch.
        grad_accum: micro-batches per optimizer step (>= 1).
        grad_clip: max global grad norm per optimizer, or None for no clipping.
        ema_modules: names of the stage's modules to keep an EMA of (empty: no EMA).
        ema_decay: EMA decay in (0, 1) (Self Forcing: 0.99).
        log_every: steps between rows of ``metrics.jsonl``.
        checkpoint_every: steps between checkpoints (one is also written at ``max_steps``).
        keep_checkpoints: newest checkpoints kept (>= 1).
        resume: continue from the newest checkpoint in ``run_dir`` (same as ``--resume``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` (slower on CUDA).
        progress: show a tqdm progress bar on rank 0.
    """

    run_dir: Path
    max_steps: int
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: Literal["none", "ddp", "fsdp"] = "none"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    ema_modules: tuple[str, ...] = ()
    ema_decay: float = 0.99
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    resume: bool = False
    deterministic: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``torch.bfloat16`` for ``bf16``, None for ``fp32``."""
        return torch.bfloat16 if self.precision == "bf16" else None


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and an optional cosine decay.

    Attributes:
        lr: peak learning rate.
        betas: Adam betas (Self Forcing DMD: ``(0.0, 0.999)``).
        weight_decay: decoupled weight decay.
        eps: Adam epsilon.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr`` (0: constant lr).
        decay_steps: after the warm-up, cosine decay from ``lr`` to ``final_lr_fraction * lr``
            over this many optimizer steps, then held there (0: no decay). Counted from the
            start of the run, warm-up included, so a run of ``decay_steps`` steps ends at the
            final rate.
        final_lr_fraction: the decayed rate as a fraction of ``lr``, in [0, 1].
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    decay_steps: int = 0
    final_lr_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps < 0:
            raise ValueError(f"decay_steps must be >= 0, got {self.decay_steps}")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"decay_steps ({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps})"
            )
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")


def build_optimizer(
    params, cfg: OptimConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``params`` and its warm-up / decay schedule (stepped once per optimizer step).

    Args:
        params: an iterable of parameters or parameter groups (``module.parameters()``).
        cfg: the optimizer config.

    Returns:
        ``(optimizer, scheduler)``; both go in the stage's ``optimizers()``/``schedulers()``
        under the same name so that they are checkpointed.
    """
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    warmup, decay, final = cfg.warmup_steps, cfg.decay_steps, cfg.final_lr_fraction

    def factor(step: int) -> float:
        if warmup and step + 1 < warmup:
            return (step + 1) / warmup
        if not decay:
            return 1.0
        progress = min(1.0, max(0.0, (step - warmup) / (decay - warmup)))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
