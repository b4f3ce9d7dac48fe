"""Losses of LongLive-RAG's retrieval embedding (arXiv 2606.02553): the Window Temporal Delta loss
and a temporal smoothness term.

Near-in-time latent frames are trivially similar; if their embeddings are too, cosine top-k
retrieval keeps returning the recent past. The Window Temporal Delta loss penalises cosine
similarity above a margin ``m`` between every frame and its ``k``-th successor for
``k = 1..w`` (w = 3, m = 0.85 in the paper), while the smoothness term keeps the embedding
trajectory free of jitter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(e: torch.Tensor, min_frames: int, what: str) -> None:
    if e.ndim != 3:
        raise ValueError(f"{what} expects embeddings (B, T, D), got {tuple(e.shape)}")
    if e.shape[1] < min_frames:
        raise ValueError(f"{what} needs T >= {min_frames} frames, got {e.shape[1]}")


def window_temporal_delta_loss(
    e: torch.Tensor, window: int = 3, margin: float = 0.85
) -> torch.Tensor:
    """``L_Δ = (1/w) Σ_{k=1..w} mean_{b,t} max(0, cos(e_{t+k}, e_t) - m)``.

    Shapes:
        e: ``(B, T, D)`` per-frame embeddings (normalised or not; cosine is scale-free).
        returns: a float32 scalar in ``[0, 1 - m]``.

    Args:
        window: ``w``, the largest frame offset penalised (>= 1).
        margin: ``m``, similarity allowed without penalty.

    Raises:
        ValueError: ``e`` not 3-D, ``T <= window``, ``window < 1``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    _check(e, window + 1, "window_temporal_delta_loss")
    e = e.float()
    terms = []
    for k in range(1, window + 1):
        cos = F.cosine_similarity(e[:, k:], e[:, :-k], dim=-1)  # (B, T - k)
        terms.append((cos - margin).clamp_min(0.0).mean())
    return torch.stack(terms).mean()


def temporal_smoothness_loss(e: torch.Tensor) -> torch.Tensor:
    """``mean_{b,t} || e_{t+2} - 2 e_{t+1} + e_t ||_2`` (second temporal difference).

    Shapes:
        e: ``(B, T, D)`` per-frame embeddings.
        returns: a float32 scalar >= 0 (0 for embeddings moving at constant velocity).

    Raises:
        ValueError: ``e`` not 3-D or ``T < 3``.
    """
    _check(e, 3, "temporal_smoothness_loss")
    e = e.float()
    second = e[:, 2:] - 2.0 * e[:, 1:-1] + e[:, :-2]  # (B, T - 2, D)
    return second.norm(dim=-1).mean()
