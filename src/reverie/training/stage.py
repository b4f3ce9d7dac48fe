"""The `Stage` protocol shared by every training stage, and the stage registry.

A stage owns *what* is trained (modules, optimizers, data, losses); the
:class:`reverie.training.trainer.Trainer` owns *how* (autocast, accumulation, clipping, EMA,
distributed sync, logging, checkpoints, resume). One optimizer step of the trainer:

    micro_batches = [next(stream) for _ in range(grad_accum)]    # stream = stage.batches(start)
    for name in stage.updates(step):                              # e.g. ("critic",) or
        zero the grads of optimizers()[name]                      #      ("critic", "generator")
        for batch in micro_batches:
            stage.forward_backward(name, batch, autocast, 1 / grad_accum)   # -> stage.loss(...)
        clip, optimizers()[name].step(), schedulers()[name].step()
    EMA update

A new stage: subclass `Stage`, set `config_class` (a frozen dataclass with a
``trainer: TrainerConfig`` field), decorate with ``@register_stage("name")`` in a module of
``reverie/training/stages/`` and import that module in ``stages/__init__.py``. A stage that
trains a learned memory component (`reverie.memory.Component`) names it in ``component`` and
implements :meth:`Stage.export_component`; ``reverie.training.export`` packages its runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from reverie.registry import Registry
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.data import make_loader
from reverie.training.distributed import DistContext

AutocastFn = Callable[[], contextlib.AbstractContextManager]


class Stage(ABC):
    """One training stage (vae, teacher, ode, dmd, ... or the ``toy`` smoke stage).

    Class attributes:
        name: set by :func:`register_stage`.
        config_class: the stage's experiment config (frozen dataclass with ``trainer``).
        resumable_changes: dotted config prefixes that may differ between a checkpoint and the
            resuming run (default: only ``trainer``: ``max_steps``, logging, ...). Any other
            difference (a model shape, a dataset) makes resume a ``ValueError``.
        component: the learned memory component a run of this stage trains (a name of
            ``reverie.memory.declared_components()``, e.g. ``memory_model``), or None.

    The constructor builds modules (wrapped with ``dist.wrap``), optimizers and schedulers. The
    trainer seeds every RNG with ``trainer.seed`` before calling it, identically on all ranks.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    resumable_changes: ClassVar[tuple[str, ...]] = ("trainer",)
    component: ClassVar[str | None] = None

    def __init__(self, config: Any, dist: DistContext) -> None:
        self.config = config
        self.dist = dist

    @classmethod
    def export_component(cls, run: Path) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
        """The trained ``component`` of a run (its newest checkpoint), frozen, and the memory
        policy options it implies (merged into ``WorldModelConfig.memory``).

        Raises:
            NotImplementedError: the stage trains no component.
            FileNotFoundError / ValueError: no checkpoint of this stage at ``run``.
        """
        raise NotImplementedError(f"stage {cls.name!r} trains no world-model component")

    @classmethod
    def check_config(cls, config: Any, dist: DistContext) -> None:
        """Validate inputs before any module is built: datasets (:func:`check_dataset` with the
        resolution the model expects), batch sizes vs. world size, paths.

        Raises:
            ValueError / FileNotFoundError: with a message naming the config key.
        """
        return None

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every module whose weights persist (saved as ``<name>.safetensors``), as passed
        through ``dist.wrap`` where trainable. Names are stable: they key the checkpoint."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by update name (``{"generator": ..., "critic": ...}``)."""

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """LR schedulers keyed like :meth:`optimizers` (stepped after their optimizer)."""
        return {}

    def updates(self, step: int) -> tuple[str, ...]:
        """Optimizers to step at ``step`` (0-based), in order. Default: all of them.

        Self Forcing's critic:generator 5:1 ratio is
        ``("critic", "generator") if step % 5 == 0 else ("critic",)``.
        """
        return tuple(self.optimizers())

    @abstractmethod
    def batches(self, start: int) -> Iterator[Any]:
        """An infinite stream of this rank's micro-batches, skipping the first ``start`` global
        micro-batches (the count stored in the checkpoint) so that a resumed run sees what the
        uninterrupted run would have seen (see :func:`reverie.training.data.make_loader`)."""

    @abstractmethod
    def loss(self, update: str, batch: Any) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch for the optimizer ``update``; runs under autocast.

        Returns:
            Scalar tensors: ``"loss"`` is back-propagated, every entry is logged as
            ``<update>/<key>`` (averaged over ranks on logging steps).
        """

    def forward_backward(
        self, update: str, batch: Any, autocast: AutocastFn, scale: float
    ) -> dict[str, torch.Tensor]:
        """Forward under ``autocast()`` and back-propagate ``scale * loss``.

        Override for several backward passes per update (RELIC's replayed back-propagation,
        §4.4.2); keep scaling every backward by ``scale`` (``1 / grad_accum``).
        """
        with autocast():
            out = self.loss(update, batch)
        (out["loss"] * scale).backward()
        return out

    def stream(
        self,
        dataset: Dataset,
        data: LoaderConfig,
        start: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> Iterator[Any]:
        """This rank's infinite micro-batch stream over ``dataset`` from global micro-batch
        ``start`` (:func:`reverie.training.data.make_loader` with the ``data`` section's batch
        size, seed and workers); what :meth:`batches` usually returns."""
        loader = make_loader(
            dataset,
            data.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=data.seed,
            start=start,
            num_workers=data.num_workers,
            collate_fn=collate_fn,
        )
        return iter(loader)

    def samples(self, batch: Any) -> int:
        """Samples in a micro-batch (for throughput); default ``len(batch)``."""
        return len(batch)

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state besides weights/optimizers/RNG (e.g. a rollout-length
        curriculum); stored in ``trainer_state.json``."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""
        return None


class LoaderConfig(Protocol):
    """The data-config fields :meth:`Stage.stream` reads (every stage's ``data`` section)."""

    batch_size: int
    seed: int
    num_workers: int


class SingleModuleStage(Stage):
    """A stage that trains one module with one optimizer and scheduler, all keyed ``key``.

    The constructor calls :meth:`train_module` once; :meth:`modules`, :meth:`optimizers` and
    :meth:`schedulers` then return ``{key: ...}``.
    """

    key: ClassVar[str]

    def train_module(self, module: nn.Module, optim: OptimConfig) -> nn.Module:
        """Record ``module`` (already ``dist.wrap``-ped) and build its AdamW + warm-up."""
        self._module = module
        self._optimizer, self._scheduler = build_optimizer(module.parameters(), optim)
        return module

    def modules(self) -> dict[str, nn.Module]:
        return {self.key: self._module}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {self.key: self._optimizer}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {self.key: self._scheduler}


STAGES: Registry[type[Stage]] = Registry("training stage")


def register_stage(name: str) -> Callable[[type[Stage]], type[Stage]]:
    """Class decorator adding a :class:`Stage` subclass to the registry under ``name``.

    Raises:
        KeyError: the name is taken.
        TypeError: ``config_class`` is not a dataclass with a ``trainer: TrainerConfig`` field.
    """

    def register(cls: type[Stage]) -> type[Stage]:
        config_class = cls.__dict__.get("config_class")
        if not dataclasses.is_dataclass(config_class):
            raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
        if typing.get_type_hints(config_class).get("trainer") is not TrainerConfig:
            raise TypeError(f"{config_class.__name__} needs a `trainer: TrainerConfig` field")
        STAGES.add(name, cls)
        cls.name = name
        return cls

    return register


def stage_names() -> list[str]:
    """Registered stage names, sorted."""
    return STAGES.names()


def get_stage(name: str) -> type[Stage]:
    """The stage class registered as ``name``.

    Raises:
        ValueError: unknown name (listing the known ones).
    """
    if name not in STAGES:  # a ValueError, so the CLI reports it as bad input (exit code 2)
        raise ValueError(f"unknown training stage {name!r}; known: {stage_names()}")
    return STAGES.get(name)
