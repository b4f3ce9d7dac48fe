"""Process group, device and module wrapping for ``trainer.distributed: none | ddp | fsdp``.

Launch multi-process runs with torchrun, which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``:

    torchrun --standalone --nproc_per_node 2 -m reverie.cli train toy --config configs/toy.yaml \
        trainer.distributed=ddp trainer.device=cpu

Backends: NCCL on CUDA, gloo on CPU. Both ``ddp`` and ``fsdp`` (FSDP2 ``fully_shard`` over a 1-D
device mesh) run on CPU with gloo in torch 2.13; gradients are averaged over ranks, so a run on
``W`` ranks with a global micro-batch ``B`` follows the single-process run with batch ``B``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reverie.training.config import TrainerConfig

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process trains and how its modules are wrapped.

    Attributes:
        mode: ``none``, ``ddp`` or ``fsdp``.
        rank, world_size, local_rank: from torchrun's environment (0, 1, 0 when single).
        device: this rank's device.
        owns_group: True when :meth:`setup` created the process group (then :meth:`close`
            destroys it); False when it was already initialised by the caller.
    """

    mode: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False
    _wrapped: list[nn.Module] = field(default_factory=list, repr=False)

    @classmethod
    def setup(cls, cfg: TrainerConfig) -> DistContext:
        """Validate the launch against ``cfg`` and initialise the process group if needed.

        Raises:
            RuntimeError: ``ddp``/``fsdp`` without a torchrun launch, a multi-process launch with
                ``distributed: none``, ``device: cuda`` without CUDA.
        """
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but CUDA is not available")
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if cfg.distributed == "none":
            if world > 1:
                raise RuntimeError(
                    f"launched on {world} processes but trainer.distributed=none; "
                    "set trainer.distributed=ddp or fsdp"
                )
            return cls(device=torch.device("cuda" if use_cuda else "cpu"))
        if "WORLD_SIZE" not in os.environ:
            raise RuntimeError(
                f"trainer.distributed={cfg.distributed} needs a torchrun launch, e.g. "
                "torchrun --standalone --nproc_per_node 2 -m reverie.cli train ..."
            )
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(
                "nccl" if use_cuda else "gloo", device_id=device if use_cuda else None
            )
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise RuntimeError("the initialised process group does not match RANK/WORLD_SIZE")
        logger.info("rank %d/%d on %s (%s)", rank, world, device, cfg.distributed)
        return cls(cfg.distributed, rank, world, local_rank, device, owns)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (writes files, shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under ``ddp`` or ``fsdp``."""
        return self.mode != "none"

    def wrap(self, module: nn.Module, *, fsdp_units: Iterable[nn.Module] = ()) -> nn.Module:
        """Move ``module`` to the device and wrap it for the mode; call it on trainable modules
        before building their optimizer, and call the returned module in the forward pass.

        ``ddp``: returns ``DistributedDataParallel(module)``. ``fsdp``: shards each module of
        ``fsdp_units`` (e.g. the transformer blocks) and then the root, in place (FSDP2), and
        returns the root. ``none``: returns the module on the device.
        """
        module = module.to(self.device)
        if self.mode == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        elif self.mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for unit in fsdp_units:
                fully_shard(unit, mesh=mesh)
            fully_shard(module, mesh=mesh)
        if self.mode != "none":
            self._wrapped.append(module)
        return module

    @contextlib.contextmanager
    def no_sync(self, enabled: bool = True) -> Iterator[None]:
        """Skip gradient synchronisation of every wrapped module (accumulation micro-steps)."""
        if not enabled or not self._wrapped:
            yield
            return
        with contextlib.ExitStack() as stack:
            for m in self._wrapped:
                if isinstance(m, DistributedDataParallel):
                    stack.enter_context(m.no_sync())
                else:  # an FSDP2 module
                    m.set_requires_gradient_sync(False)
                    stack.callback(m.set_requires_gradient_sync, True)
            yield

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average scalar tensors over ranks (one all-reduce) and return Python floats.

        A host sync: call it only on logging steps. Every rank must pass the same keys.
        """
        if not values:
            return {}
        keys = sorted(values)
        stacked = torch.stack([full_tensor(values[k]).detach().float().reshape(()) for k in keys])
        stacked = stacked.to(self.device)
        if self.distributed:
            dist.all_reduce(stacked)
            stacked /= self.world_size
        return dict(zip(keys, stacked.cpu().tolist(), strict=True))

    def barrier(self) -> None:
        """Wait for every rank (no-op when single-process)."""
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if :meth:`setup` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def unwrap(module: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 modules are wrapped in place)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full (unsharded) value, a collective every rank must join; else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
