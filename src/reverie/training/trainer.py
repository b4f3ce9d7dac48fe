"""The training loop shared by every stage: autocast, accumulation, clipping, EMA, DDP/FSDP,
seeded determinism, JSONL metrics, atomic checkpoints and exact resume.

    reverie train toy --config configs/toy.yaml trainer.max_steps=20 optim.lr=1e-3
    reverie train toy --config configs/toy.yaml --resume                # continue the run

    from reverie.training import train
    result = train("toy", "configs/toy.yaml", ["trainer.max_steps=20"])

Everything that can be checked is checked before the first forward pass: the stage name, the
config (unknown keys, types, values), an existing run without ``--resume``, a checkpoint written
with another config (``Stage.resumable_changes``), the launch (``distributed`` vs torchrun), the
stage's inputs (``Stage.check_config``), EMA module names.

A resumed run continues exactly: weights, EMA, optimizer/scheduler state, every rank's RNG
states and the step are restored, the data stream restarts at the global micro-batch it had
reached (``Stage.batches(start)``), and ``metrics.jsonl`` is cut back to the checkpoint.
Resume takes the newest *intact* checkpoint: damaged newer ones are named in a warning and
moved aside (``reverie.training.checkpoint.latest_intact_checkpoint``); with no checkpoint at
all it says so and starts fresh.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from reverie.config_utils import load_config, to_dict
from reverie.training.checkpoint import (
    check_compatible,
    latest_checkpoint,
    latest_intact_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    set_aside,
    write_run_config,
)
from reverie.training.distributed import DistContext
from reverie.training.ema import EMA
from reverie.training.metrics import MetricsLog
from reverie.training.seeding import seed_everything
from reverie.training.stage import Stage, get_stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a finished :meth:`Trainer.run` reports.

    Attributes:
        run_dir: the run directory.
        step: optimizer steps done in total (``trainer.max_steps``).
        metrics: the last logged row (rank-averaged floats), empty if nothing was logged.
        checkpoint: the newest checkpoint, or None.
    """

    run_dir: Path
    step: int
    metrics: dict[str, float]
    checkpoint: Path | None


def load_experiment(
    stage: str, config_path: str | Path, overrides: Sequence[str] = (), *, resume: bool = False
) -> tuple[type[Stage], Any]:
    """Resolve a stage and its config file with ``key.sub=value`` overrides.

    Returns:
        ``(stage_class, config)``; ``resume=True`` sets ``trainer.resume``.

    Raises:
        ValueError: unknown stage, unknown key, wrong type or bad value (naming the key).
        FileNotFoundError: no config file.
    """
    stage_cls = get_stage(stage)
    config = load_config(stage_cls.config_class, config_path, overrides)
    if resume:
        trainer = dataclasses.replace(config.trainer, resume=True)
        config = dataclasses.replace(config, trainer=trainer)
    return stage_cls, config


def train(
    stage: str, config_path: str | Path, overrides: Sequence[str] = (), *, resume: bool = False
) -> TrainResult:
    """Load the experiment (:func:`load_experiment`) and train it to ``trainer.max_steps``."""
    stage_cls, config = load_experiment(stage, config_path, overrides, resume=resume)
    return Trainer(stage_cls, config).run()


class Trainer:
    """Set up a stage for training (all checks, build, resume) and run its loop.

    Args:
        stage_cls: a registered :class:`Stage` subclass.
        config: an instance of ``stage_cls.config_class``.

    Raises:
        ValueError: an existing run without resume, a checkpoint of another stage or config,
            unknown EMA modules, schedulers without optimizers, or the stage's own checks.
        RuntimeError: a launch that does not match ``trainer.distributed``/``device``.
    """

    def __init__(self, stage_cls: type[Stage], config: Any) -> None:
        if not isinstance(config, stage_cls.config_class):
            raise TypeError(f"config must be a {stage_cls.config_class.__name__}")
        self.config, self.cfg = config, config.trainer
        self.config_dict = to_dict(config)
        self.run_dir = Path(self.cfg.run_dir)
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is not None and not self.cfg.resume:
            raise ValueError(
                f"{self.run_dir} already has checkpoints (latest {ckpt.name}); pass --resume "
                "(trainer.resume=true) to continue it or choose another trainer.run_dir"
            )
        if self.cfg.resume:
            ckpt = self._intact_checkpoint()
        if ckpt is not None:
            check_compatible(ckpt, stage_cls.name, self.config_dict, stage_cls.resumable_changes)
        self.dist = DistContext.setup(self.cfg)
        try:
            self._build(stage_cls, ckpt)
        except BaseException:
            self.dist.close()
            raise

    def _intact_checkpoint(self) -> Path | None:
        """The checkpoint to resume: the newest intact one (damaged newer ones are reported
        and, on rank 0, moved aside), or None when the run has none (said, then fresh).

        Raises:
            ValueError: every checkpoint is damaged (each named with its problem).
        """
        ckpt, damaged = latest_intact_checkpoint(self.run_dir)
        if damaged and ckpt is None:
            reasons = "; ".join(reason for _, reason in damaged)
            raise ValueError(
                f"cannot resume {self.run_dir}: every checkpoint is damaged ({reasons}); "
                "delete them to start fresh or choose another trainer.run_dir"
            )
        for bad, reason in damaged:
            logger.warning(
                "checkpoint %s is damaged (%s); resuming from the older %s instead",
                bad.name,
                reason,
                ckpt.name,
            )
            if int(os.environ.get("RANK", "0")) == 0:
                logger.warning("moved it to %s", set_aside(bad))
        if ckpt is None:
            logger.warning("nothing to resume in %s; starting fresh", self.run_dir)
        return ckpt

    def _build(self, stage_cls: type[Stage], ckpt: Path | None) -> None:
        cfg, dist = self.cfg, self.dist
        stage_cls.check_config(self.config, dist)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by cuBLAS
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.seed)  # the same initial weights on every rank
        self.stage = stage = stage_cls(self.config, dist)
        modules, optimizers = stage.modules(), stage.optimizers()
        unknown = sorted(set(cfg.ema_modules) - set(modules))
        if unknown:
            raise ValueError(
                f"trainer.ema_modules {unknown} are not modules of {stage.name}: {sorted(modules)}"
            )
        orphans = sorted(set(stage.schedulers()) - set(optimizers))
        if orphans:
            raise ValueError(f"schedulers {orphans} have no optimizer of the same name")
        self.ema = (
            EMA({n: modules[n] for n in cfg.ema_modules}, cfg.ema_decay)
            if cfg.ema_modules
            else None
        )
        seed_everything(cfg.seed + dist.rank)  # per-rank training streams (noise, dropout)
        self.step, self.micro_batches, self.resumed = 0, 0, ckpt is not None
        if ckpt is not None:
            if dist.is_main:
                remove_partial_checkpoints(self.run_dir)
            state = load_checkpoint(ckpt, stage, self.ema, dist)
            self.step, self.micro_batches = state["step"], state["micro_batches"]
        self.checkpoint = ckpt

    def run(self) -> TrainResult:
        """Train from ``self.step`` to ``trainer.max_steps``; checkpoints every
        ``checkpoint_every`` steps and at the end. Releases the process group it created."""
        cfg, dist, stage = self.cfg, self.dist, self.stage
        try:
            metrics = None
            if dist.is_main:
                metrics = MetricsLog(self.run_dir, self.step if self.resumed else None)
                write_run_config(self.run_dir, stage.name, self.config_dict)
            stream = stage.batches(self.micro_batches)
            autocast = functools.partial(
                torch.autocast,
                dist.device.type,
                dtype=torch.bfloat16,
                enabled=cfg.precision == "bf16",
            )
            last: dict[str, float] = {}
            bar = tqdm(
                total=cfg.max_steps,
                initial=self.step,
                desc=f"train {stage.name}",
                disable=not (cfg.progress and dist.is_main),
                dynamic_ncols=True,
            )
            with bar:
                t0, step0, samples = time.perf_counter(), self.step, 0
                while self.step < cfg.max_steps:
                    logs, n = self._train_step(stream, autocast)
                    self.step += 1
                    self.micro_batches += cfg.grad_accum
                    samples += n * dist.world_size
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        seconds = time.perf_counter() - t0
                        last = {"step": self.step, **dist.mean(logs)}
                        for name, opt in stage.optimizers().items():
                            last[f"lr/{name}"] = opt.param_groups[0]["lr"]
                        last["steps_per_s"] = (self.step - step0) / seconds
                        last["samples_per_s"] = samples / seconds
                        t0, step0, samples = time.perf_counter(), self.step, 0
                        if metrics is not None:
                            metrics.write(last)
                        bar.set_postfix(_postfix(last), refresh=False)
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                        self.checkpoint = save_checkpoint(
                            self.run_dir,
                            self.step,
                            self.micro_batches,
                            stage,
                            self.ema,
                            dist,
                            self.config_dict,
                            cfg.keep_checkpoints,
                        )
            return TrainResult(self.run_dir, self.step, last, self.checkpoint)
        except KeyboardInterrupt:
            logger.warning(
                "interrupted at step %d; continue from %s with --resume", self.step, self.checkpoint
            )
            raise
        finally:
            dist.close()

    def _train_step(
        self, stream: Iterator[Any], autocast: Any
    ) -> tuple[dict[str, torch.Tensor], int]:
        """One optimizer step: ``grad_accum`` micro-batches through every scheduled update."""
        cfg, dist, stage = self.cfg, self.dist, self.stage
        micro = [next(stream) for _ in range(cfg.grad_accum)]
        optimizers, schedulers = stage.optimizers(), stage.schedulers()
        logs: dict[str, torch.Tensor] = {}
        for name in stage.updates(self.step):
            opt = optimizers[name]
            opt.zero_grad(set_to_none=True)
            sums: dict[str, torch.Tensor] = {}
            for i, batch in enumerate(micro):
                with dist.no_sync(i < len(micro) - 1):  # sync gradients on the last only
                    out = stage.forward_backward(name, batch, autocast, 1.0 / len(micro))
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float() / len(micro)
            if cfg.grad_clip is not None:
                params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
                sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if name in schedulers:
                schedulers[name].step()
            logs.update({f"{name}/{k}": v for k, v in sums.items()})
        if self.ema is not None:
            self.ema.update()
        return logs, sum(stage.samples(b) for b in micro)


def _postfix(row: dict[str, float]) -> dict[str, str]:
    shown = {k: f"{v:.4g}" for k, v in row.items() if k.endswith("/loss")}
    shown["samples/s"] = f"{row['samples_per_s']:.1f}"
    return shown
