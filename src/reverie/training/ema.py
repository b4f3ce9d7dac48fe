"""Exponential moving average of module weights (Self Forcing: EMA 0.99 of the generator)."""

from __future__ import annotations

import torch
from torch import nn

from reverie.training.distributed import full_tensor, unwrap


class EMA:
    """Shadow copies ``ema = decay * ema + (1 - decay) * w`` of modules' state dicts.

    Floating-point entries (parameters, float buffers) are averaged; other buffers (step
    counters) are copied. The shadow has the module's ``state_dict`` keys, so an EMA file loads
    into a fresh module with ``load_state_dict``. Works on plain, DDP and FSDP2 modules (the
    shadow of a sharded parameter is sharded the same way).

    Args:
        modules: name -> module (wrapped or not) to track.
        decay: in (0, 1).
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.modules = {name: unwrap(m) for name, m in modules.items()}
        with torch.no_grad():
            self.shadow = {
                name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                for name, m in self.modules.items()
            }

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow towards the current weights (call after each optimizer step)."""
        for name, module in self.modules.items():
            shadow = self.shadow[name]
            for k, v in module.state_dict().items():
                if v.is_floating_point():
                    shadow[k].lerp_(v.detach(), 1.0 - self.decay)
                else:
                    shadow[k].copy_(v)

    def full_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The unsharded CPU shadow of module ``name`` (a collective under FSDP: every rank
        must call it)."""
        return {k: full_tensor(v).detach().cpu().clone() for k, v in self.shadow[name].items()}

    @torch.no_grad()
    def load_full_state_dict(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Set the shadow of ``name`` from unsharded tensors (same keys and shapes).

        Raises:
            ValueError: different keys or shapes.
        """
        from torch.distributed.tensor import DTensor, distribute_tensor

        shadow = self.shadow[name]
        if set(state) != set(shadow):
            raise ValueError(
                f"EMA of {name!r}: checkpoint keys differ (missing "
                f"{sorted(set(shadow) - set(state))[:5]}, unexpected "
                f"{sorted(set(state) - set(shadow))[:5]})"
            )
        for k, target in shadow.items():
            value = state[k]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"EMA of {name!r}: {k} is {tuple(value.shape)} in the checkpoint, "
                    f"{tuple(target.shape)} here"
                )
            if isinstance(target, DTensor):
                value = distribute_tensor(
                    value.to(target.device_mesh.device_type, target.dtype),
                    target.device_mesh,
                    target.placements,
                )
                target.copy_(value)
            else:
                target.copy_(value.to(target.device, target.dtype))
