"""Explicit KV cache for streaming (block-causal) generation with the Wan DiT.

Storage contract (what the model reads and writes):

- Per layer, keys and values of every cached token, `(B, H, N, Dh)`. **Keys are stored without
  RoPE.** RoPE is applied at read time from the stored per-token positions, so a memory policy
  may pool tokens spatially (RELIC §4.3: 2x/4x per side) together with their positions, or
  re-index frames (MAG's randomised RoPE start, LongLive's frame sink), without undoing
  rotations. Pose conditioning (RELIC §4.1.2) is already included in the stored keys.
- One `positions (N, 3)` tensor shared by all layers: (latent frame, row, column) of each token,
  float32, fractional positions allowed.
- Per-frame bookkeeping (`CachedFrame`: absolute latent-frame index and token grid) in host
  memory, in storage order, so policies can select, drop or replace whole frames.

Everything in the cache is visible to every query of the next forward (the cache holds context,
never the future); *which* frames stay is decided by the engine / memory policies, never by the
attention forward. The model only reads the cache and, when asked (`write_cache=True`), appends
the current chunk with one `append` call after its last block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from reverie.models.attention import PastKeyValues
from reverie.models.rope import TIME_AXIS


@dataclass(frozen=True)
class CachedFrame:
    """One cached latent frame: its absolute index and the (rows, columns) of its token grid."""

    index: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        return self.height * self.width


class KVCache:
    """Per-layer K/V of past latent frames with per-token positions and per-frame bookkeeping.

    Shapes:
        keys[i], values[i]: `(B, H, N, Dh)` for layer i (keys without RoPE).
        positions: `(N, 3)` float32 (latent frame, row, column).
    """

    def __init__(self, num_layers: int) -> None:
        if num_layers < 1:
            raise ValueError("a KVCache needs at least one layer")
        self.num_layers = num_layers
        self.reset()

    def reset(self) -> None:
        """Drop everything (start of a new episode)."""
        self.keys: list[torch.Tensor | None] = [None] * self.num_layers
        self.values: list[torch.Tensor | None] = [None] * self.num_layers
        self.positions: torch.Tensor | None = None
        self.frames: list[CachedFrame] = []

    # ----------------------------------------------------------------- properties (host only)
    @property
    def is_empty(self) -> bool:
        return not self.frames

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def num_tokens(self) -> int:
        return sum(frame.num_tokens for frame in self.frames)

    @property
    def frame_indices(self) -> list[int]:
        """Absolute latent-frame index of each cached frame, in storage order."""
        return [frame.index for frame in self.frames]

    @property
    def next_frame(self) -> int:
        """Latent-frame index after the latest cached frame (0 when empty)."""
        return max(self.frame_indices, default=-1) + 1

    @property
    def nbytes(self) -> int:
        """Bytes held by keys and values over all layers (positions excluded: 12 B per token)."""
        tensors = [t for t in (*self.keys, *self.values) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def frame_slices(self) -> list[slice]:
        """Token range of each cached frame along the token axis, in storage order."""
        slices, start = [], 0
        for frame in self.frames:
            slices.append(slice(start, start + frame.num_tokens))
            start += frame.num_tokens
        return slices

    # ----------------------------------------------------------------------------- read
    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s stored `(keys, values)`, each `(B, H, N, Dh)`, keys without RoPE."""
        if self.is_empty:
            raise ValueError("the cache is empty")
        return self.keys[index], self.values[index]

    def past_for_layers(self, cos: torch.Tensor, sin: torch.Tensor) -> list[PastKeyValues | None]:
        """Every layer's context sharing one pair of RoPE tables `(N, Dh // 2)`."""
        if self.is_empty:
            return [None] * self.num_layers
        return [PastKeyValues(k, v, cos, sin) for k, v in zip(self.keys, self.values, strict=True)]

    # ---------------------------------------------------------------------------- write
    def append(
        self,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
        positions: torch.Tensor,
        frames: Sequence[CachedFrame],
    ) -> None:
        """Append frames to the end of the cache (all layers at once).

        Tensors are stored as given (not detached): write under `torch.no_grad()` unless the
        training algorithm back-propagates through the cache.

        Shapes:
            keys, values: one `(B, H, n, Dh)` tensor per layer (keys without RoPE).
            positions: `(n, 3)`; `frames` describe the n tokens in order.

        Raises:
            ValueError: on a wrong number of layers or inconsistent token counts / batch.
        """
        if len(keys) != self.num_layers or len(values) != self.num_layers:
            raise ValueError(f"append needs {self.num_layers} layers of keys and values")
        num_new = sum(frame.num_tokens for frame in frames)
        if positions.shape != (num_new, 3) or any(k.shape[2] != num_new for k in keys):
            raise ValueError(
                f"frames describe {num_new} tokens but positions have shape "
                f"{tuple(positions.shape)} and keys {[tuple(k.shape) for k in keys[:1]]}"
            )
        if not self.is_empty and keys[0].shape[:2] != self.keys[0].shape[:2]:
            raise ValueError(
                f"batch/heads {tuple(keys[0].shape[:2])} differ from the cache's "
                f"{tuple(self.keys[0].shape[:2])}"
            )
        for i in range(self.num_layers):
            self.keys[i] = _concat(self.keys[i], keys[i])
            self.values[i] = _concat(self.values[i], values[i])
        self.positions = _concat(self.positions, positions.float(), dim=0)
        self.frames.extend(frames)

    def select_frames(self, slots: Sequence[int]) -> None:
        """Keep only the cached frames at storage positions `slots`, in that order.

        The primitive that eviction policies (rolling window, sink, retrieval) build on.
        Token indices are built on the host, so there is no device sync.
        """
        if not slots:
            self.reset()
            return
        ranges = self.frame_slices()
        token_index = torch.cat([torch.arange(ranges[s].start, ranges[s].stop) for s in slots]).to(
            self.positions.device
        )  # (n_kept,)
        for i in range(self.num_layers):
            self.keys[i] = self.keys[i].index_select(2, token_index)
            self.values[i] = self.values[i].index_select(2, token_index)
        self.positions = self.positions.index_select(0, token_index)
        self.frames = [self.frames[s] for s in slots]

    def frame_positions(self) -> torch.Tensor:
        """Temporal position of every cached token, `(N,)` float32 (a view of `positions`)."""
        if self.positions is None:
            raise ValueError("the cache is empty")
        return self.positions[:, TIME_AXIS]


def _concat(old: torch.Tensor | None, new: torch.Tensor, dim: int = 2) -> torch.Tensor:
    return new if old is None else torch.cat([old, new], dim=dim)
