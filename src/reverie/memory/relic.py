"""`relic`: rolling window + spatially compressed long-horizon memory (RELIC arXiv 2512.04040
§4.3, schedule from §5.1).

The cache has two branches. The **rolling window** holds the `window_frames` newest latent
frames uncompressed. Every older frame stays forever in the **compressed spatial memory**:
when latent frame `i` leaves the window, its K/V are downsampled `s_i x s_i` per side with
`s_i = S[i mod len(S)]` and `S = [1,4,2,4,4,4,2,4,4,2,4,4,4,2,4,4,2,4]` (factors 1x, 2x, 4x;
frame 0 keeps full resolution). Over one period of S a frame keeps on average
`(1 + 5/4 + 12/16) / 18 = 1/6` of its tokens; with a 6-frame window an 81-latent-frame (20 s)
stream at 480x832 keeps ~30K of 126K tokens, the "120K -> 30K" of §4.3.

How pooled tokens are placed (`cache_ops.pool_frame`): K (un-rotated, with the pose
embedding of RELIC §4.1.2 already added) and V are averaged over each `s x s` token patch,
and so are the token positions. A pooled token therefore sits at the **fractional centre of
its patch** in the frame's original token grid (e.g. `(row, col) = (1.5, 1.5)` for the first
4x4 patch), at the frame's unchanged temporal index; the pooled keys are rotated at these
positions, so pooled tokens stay aligned with full-resolution tokens in every axis. Token
grids not divisible by `s` (480x832 latents -> 30x52 tokens) keep partial edge patches that
average only the tokens they cover, centred on those tokens' mean position (no padding, no
token dropped): the pooled grid is `ceil(h / s) x ceil(w / s)`.

The paper does not give `w`; `window_frames=6` reproduces its 30K-token figure (above).

**Long streams (our extension; the paper evaluates 20 s).** Under the schedule alone the cache
grows by ~1/6 of a frame's tokens per latent frame without bound. Frames up to
`horizon_frames` latent frames older than the newest (default 80: the paper's 20 s) keep the
schedule S exactly. Older frames move to a long-range level: each is pooled to **one token**
(the mean of its keys and values, at the frame's mean position) and the level is **thinned by
octaves of age**: a frame of age `a` in `(2^(l-1) H, 2^l H]` stays only if its index is a
multiple of `2^l`. Each octave then holds about `H / 2` frames, so the held tokens grow with
the logarithm of the stream length (10 min at 4 latent frames/s: ~5 octaves, ~200 tokens on
top of the horizon's). Frame 0, the start image, is never thinned or re-pooled. `max_tokens`
optionally caps the total: the oldest long-range frames are dropped first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from reverie.memory.cache_ops import pool_frame, split_frames
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
        horizon_frames: frames at most this many latent frames older than the newest follow
            `schedule`; older ones go to the one-token, octave-thinned long-range level
            (module docstring). None: the paper's rule for any length (unbounded).
        max_tokens: optional cap on the cache's tokens; the oldest long-range frames are
            dropped first (frames within the horizon never are). None: no cap.
    """

    window_frames: int = 6
    schedule: tuple[int, ...] = RELIC_SCHEDULE
    horizon_frames: int | None = 80
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {self.window_frames}")
        if not self.schedule or any(s < 1 for s in self.schedule):
            raise ValueError(f"schedule must be non-empty factors >= 1, got {self.schedule}")
        if self.horizon_frames is not None and self.horizon_frames < self.window_frames:
            raise ValueError(
                f"horizon_frames ({self.horizon_frames}) must be >= window_frames "
                f"({self.window_frames}) or None"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")

    def factor(self, frame_index: int) -> int:
        """Downsampling factor per side of latent frame `frame_index` (RELIC §5.1)."""
        return self.schedule[frame_index % len(self.schedule)]

    def keeps_long_range(self, frame_index: int, age: int) -> bool:
        """Whether a frame `age` latent frames older than the newest stays in the long-range
        level: its index is a multiple of `2^l` for age in `(2^(l-1) H, 2^l H]`; frame 0
        always stays."""
        horizon = self.horizon_frames
        if horizon is None or age <= horizon or frame_index == 0:
            return True
        octave = math.ceil(math.log2(age / horizon))  # >= 1
        return frame_index % (2**octave) == 0


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
        untouched (same tensors' values, same positions). Then, with a horizon, frames past it
        are pooled to one token and thinned by octaves, and `max_tokens` is applied (module
        docstring).

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
        pooled = [  # new tensors, computed before any replacement moves the storage
            pool_frame(part, self.config.factor(part.frame.index))
            for part in split_frames(cache, to_pool)
        ]
        for slot, part in zip(to_pool, pooled, strict=True):
            cache.replace_frame(slot, part.keys, part.values, part.positions, part.frame)
        if self.config.horizon_frames is not None:
            self._long_range(cache, newest.index)

    def _long_range(self, cache: KVCache, newest: int) -> None:
        """Pool frames past the horizon to one token, thin them by octaves, apply the cap."""
        cfg = self.config
        frames = cache.frames
        beyond = [s for s, f in enumerate(frames) if newest - f.index > cfg.horizon_frames]
        coarse = [s for s in beyond if frames[s].index != 0 and frames[s].num_tokens > 1]
        one_token = [
            pool_frame(part, max(part.frame.height, part.frame.width))
            for part in split_frames(cache, coarse)
        ]
        for slot, part in zip(coarse, one_token, strict=True):
            cache.replace_frame(slot, part.keys, part.values, part.positions, part.frame)
        drop = {
            s for s in beyond if not cfg.keeps_long_range(frames[s].index, newest - frames[s].index)
        }
        if cfg.max_tokens is not None:
            excess = cache.num_tokens - sum(frames[s].num_tokens for s in drop) - cfg.max_tokens
            for s in beyond:  # storage order = time order: oldest first
                if excess <= 0:
                    break
                if s not in drop and frames[s].index != 0:
                    drop.add(s)
                    excess -= frames[s].num_tokens
        if drop:
            cache.select_frames([s for s in range(len(frames)) if s not in drop])
