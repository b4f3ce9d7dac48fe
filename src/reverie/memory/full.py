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
    """No settings: the full history is kept."""


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
            ValueError: if the cache holds fewer than T frames.
        """
        check_new_block(cache, latents)
