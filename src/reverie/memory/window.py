"""`window`: frame sink + rolling window (LongLive, arXiv 2509.22622; StreamingLLM's attention
sink, arXiv 2309.17453).

After every write the cache keeps the `sink_frames` oldest frames (the start of the video,
which stabilises attention) and the `window_frames` newest frames; everything in between is
dropped for good. Kept frames are untouched: full resolution, their true absolute positions
(keys carry RoPE at those positions, applied once when written; shifting frames within the
cache's storage changes neither). Each drop moves only the sink (the smaller side of the gap),
so an eviction costs O(sink), not O(cache) (`KVCache.select_frames`).

LongLive's setting is 12 latent frames of cache in total with a 3-frame sink (one block),
i.e. `sink_frames=3, window_frames=9` (18,720 tokens per layer at 480x832).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.memory.policy import CacheResidentPolicy, check_new_block, register_policy
from reverie.models.kv_cache import KVCache


@dataclass(frozen=True)
class WindowConfig:
    """Frame sink + rolling window.

    Attributes:
        window_frames: newest latent frames kept (>= 1, so the newest frame stays visible).
        sink_frames: oldest latent frames kept forever (>= 0).
    """

    window_frames: int = 9
    sink_frames: int = 3

    def __post_init__(self) -> None:
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {self.window_frames}")
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be >= 0, got {self.sink_frames}")

    @property
    def max_frames(self) -> int:
        return self.sink_frames + self.window_frames


def sink_and_window_slots(num_frames: int, sink: int, window: int) -> list[int]:
    """Storage slots of the first `sink` and the last `window` of `num_frames` frames."""
    if num_frames <= sink + window:
        return list(range(num_frames))
    return list(range(sink)) + list(range(num_frames - window, num_frames))


@register_policy("window")
class WindowPolicy(CacheResidentPolicy):
    """Keep `sink_frames` oldest + `window_frames` newest latent frames (LongLive)."""

    config_class = WindowConfig

    def __init__(self, config: WindowConfig | None = None) -> None:
        super().__init__(WindowConfig() if config is None else config)

    @property
    def max_frames(self) -> int:
        return self.config.max_frames

    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Drop the frames between the sink and the window (storage order = time order).

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)`.

        Raises:
            ValueError: if the cache holds fewer than T frames.
        """
        check_new_block(cache, latents)
        cfg = self.config
        if cache.num_frames > cfg.max_frames:
            cache.select_frames(
                sink_and_window_slots(cache.num_frames, cfg.sink_frames, cfg.window_frames)
            )
