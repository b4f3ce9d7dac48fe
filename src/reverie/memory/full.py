"""`full`: keep every frame's K/V at full resolution (Self Forcing, arXiv 2506.08009 §3).

The cache grows by one frame of tokens per latent frame, so attention cost and memory grow
linearly with the stream; this is the reference the other policies are compared with, and it
reproduces the model's plain cached streaming exactly (`after_write` changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.memory.policy import CacheResidentPolicy, check_new_block, register_policy
from reverie.models.kv_cache import KVCache


@dataclass(frozen=True)
class FullConfig:
    """The full history is kept, up to an optional cap.

    Attributes:
        max_frames: the most latent frames the cache may hold; a write beyond it raises a
            `ValueError` naming the cap (None: no cap; the cache still raises a clear
            `MemoryError` before growing past the free memory).
    """

    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")


@register_policy("full")
class FullPolicy(CacheResidentPolicy):
    """Keep everything the engine writes (Self Forcing's full-history cache)."""

    config_class = FullConfig

    def __init__(self, config: FullConfig | None = None) -> None:
        super().__init__(FullConfig() if config is None else config)

    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Validate and keep the cache as it is.

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)`.

        Raises:
            ValueError: if the cache holds fewer than T frames, or more than `max_frames`.
        """
        check_new_block(cache, latents)
        cap = self.config.max_frames
        if cap is not None and cache.num_frames > cap:
            raise ValueError(
                f"full memory holds {cache.num_frames} latent frames, over its max_frames cap "
                f"of {cap}; use a bounded memory policy (window, relic, mag, retrieval) or a "
                f"shorter stream"
            )
