"""Flow-matching (rectified-flow) velocity loss.

With flow time ``t`` in [0, 1] and ``t = 1`` pure noise (docs/conventions.md), the noisy sample is
``x_t = (1 - t) x_0 + t ε`` and the network regresses the velocity ``v = dx_t/dt = ε - x_0``
(conditional flow matching, Lipman et al. arXiv 2210.02747 eq. 23 with the optimal-transport path
of eq. 20-22; rectified flow, Liu et al. arXiv 2209.03003; the Wan2.1 training objective).
"""

from __future__ import annotations

import torch


def flow_matching_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between predicted and target velocities, optionally weighted.

    Shapes:
        pred, target: ``(B, ...)``, e.g. latents ``(B, T, C, H, W)``; any float dtype (the
            loss is computed in float32).
        weight: None, or per-sample ``(B,)`` / per-frame ``(B, T)`` non-negative weights that
            broadcast over the trailing dimensions (e.g. a timestep weighting).
        returns: a float32 scalar, ``mean(weight * (pred - target)^2)`` (the weighted sum over
            elements divided by the element count).

    Raises:
        ValueError: ``pred`` and ``target`` shapes differ, or ``weight`` does not match the
            leading dimensions.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    sq = (pred.float() - target.float()).square()
    if weight is None:
        return sq.mean()
    if weight.shape != pred.shape[: weight.ndim]:
        raise ValueError(
            f"weight {tuple(weight.shape)} must match the leading dims of {tuple(pred.shape)}"
        )
    w = weight.float().reshape(*weight.shape, *([1] * (pred.ndim - weight.ndim)))
    return (w * sq).mean()
