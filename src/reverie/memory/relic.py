"""`relic`: rolling window + spatially compressed long-horizon memory (RELIC arXiv 2512.04040
§4.3, schedule from §5.1).

The cache has two branches. The **rolling window** holds the `window_frames` newest latent
frames uncompressed. Every older frame stays forever in the **compressed spatial memory**:
when latent frame `i` leaves the window, its K/V are downsampled `s_i x s_i` per side with
`s_i = S[i mod len(S)]` and `S = [1,4,2,4,4,4,2,4,4,2,4,4,4,2,4,4,2,4]` (factors 1x, 2x, 4x;
frame 0 keeps full resolution). Over one period of S a frame keeps on average
`(1 + 5/4 + 12/16) / 18 = 1/6` of its tokens; with a 6-frame window an 81-latent-frame (20 s)
stream at 480x832 keeps ~30K of 126K tokens, the "120K -> 30K" of §4.3.

How pooled tokens are placed (`cache_ops.pool_frame`): K (stored without RoPE, with the
pose embedding of RELIC §4.1.2 already added) and V are averaged over each `s x s` token patch,
and so are the token positions. A pooled token therefore sits at the **fractional centre of
its patch** in the frame's original token grid (e.g. `(row, col) = (1.5, 1.5)` for the first
4x4 patch), at the frame's unchanged temporal index; RoPE is applied at read time from these
positions, so pooled tokens stay aligned with full-resolution tokens in every axis. Token
grids not divisible by `s` (480x832 latents -> 30x52 tokens) keep partial edge patches that
average only the tokens they cover, centred on those tokens' mean position (no padding, no
token dropped): the pooled grid is `ceil(h / s) x ceil(w / s)`.

The paper does not give `w`; `window_frames=6` reproduces its 30K-token figure (above).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.memory.cache_ops import assemble, pool_frame, split_frames
from reverie.memory.policy import CacheResidentPolicy, check_new_block, register_policy
from reverie.models.kv_cache import KVCache

# RELIC §5.1: per-frame spatial downsampling factors, frame i uses S[i mod len(S)].
RELIC_SCHEDULE = (1, 4, 2, 4, 4, 4, 2, 4, 4, 2, 4, 4, 4, 2, 4, 4, 2, 4)


@dataclass(frozen=True)
class RelicConfig:
    """RELIC's two-branch cache.

    Attributes:
        window_frames: newest latent frames kept uncompressed (>= 1).
        schedule: downsampling factor per side of latent frame i is
            `schedule[i mod len(schedule)]` (each >= 1) once it leaves the window.
    """

    window_frames: int = 6
    schedule: tuple[int, ...] = RELIC_SCHEDULE

    def __post_init__(self) -> None:
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {self.window_frames}")
        if not self.schedule or any(s < 1 for s in self.schedule):
            raise ValueError(f"schedule must be non-empty factors >= 1, got {self.schedule}")

    def factor(self, frame_index: int) -> int:
        """Downsampling factor per side of latent frame `frame_index` (RELIC §5.1)."""
        return self.schedule[frame_index % len(self.schedule)]


@register_policy("relic")
class RelicPolicy(CacheResidentPolicy):
    """Rolling window + spatially downsampled memory of every older frame (RELIC §4.3)."""

    config_class = RelicConfig

    def __init__(self, config: RelicConfig | None = None) -> None:
        super().__init__(RelicConfig() if config is None else config)

    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Pool the frames that left the window by their scheduled factor.

        A frame is pooled exactly once: it is pooled when it is older than the window and its
        token grid is still the full grid (that of the newest frame); pooled grids are smaller,
        so this needs no side state. Frames in the window and frames with factor 1 are left
        untouched (same tensors' values, same positions).

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)`.

        Raises:
            ValueError: if the cache holds fewer than T frames.
        """
        check_new_block(cache, latents)
        frames = cache.frames
        newest = max(frames, key=lambda f: f.index)
        full_grid = (newest.height, newest.width)
        boundary = newest.index - self.config.window_frames  # frames <= boundary are old
        to_pool = [
            slot
            for slot, f in enumerate(frames)
            if f.index <= boundary
            and (f.height, f.width) == full_grid
            and self.config.factor(f.index) > 1
        ]
        if not to_pool:
            return
        parts = split_frames(cache)
        for slot in to_pool:
            parts[slot] = pool_frame(parts[slot], self.config.factor(parts[slot].frame.index))
        assemble(cache, parts)
