"""Frame-level operations on a `KVCache`, built on its public API (`frame_slices`, `append`,
`reset`, `keys`/`values`/`positions`/`frames`): split a cache into per-frame token groups, pool a
frame spatially, and rebuild a cache from frames.

Memory policies compose these between model calls (STYLE §7: the engine calls the policy, the
attention forward never evicts). Everything here is host bookkeeping plus tensor copies; there is
no device sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from reverie.models.kv_cache import CachedFrame, KVCache
from reverie.models.rope import TIME_AXIS


@dataclass(frozen=True)
class FrameTokens:
    """The cached tokens of one latent frame, in every layer.

    Attributes:
        keys, values: one `(B, H, n, Dh)` tensor per layer (keys without RoPE, as stored).
        positions: `(n, 3)` float32 (latent frame, row, column) of the n tokens.
        frame: bookkeeping (absolute index, token grid); `frame.num_tokens == n`.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    positions: torch.Tensor
    frame: CachedFrame

    @property
    def num_tokens(self) -> int:
        return self.frame.num_tokens

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values over all layers (positions excluded, as `KVCache.nbytes`)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def to(self, device: torch.device | str, copy: bool = True) -> FrameTokens:
        """The tokens on `device`. By default always a copy, so the result never keeps a slice
        of a larger cache tensor alive (a view would pin the whole old tensor in memory)."""
        return FrameTokens(
            tuple(k.to(device, copy=copy) for k in self.keys),
            tuple(v.to(device, copy=copy) for v in self.values),
            self.positions.to(device, copy=copy),
            self.frame,
        )

    def with_time(self, time: float) -> FrameTokens:
        """The same tokens placed at temporal RoPE position `time` (keys, values shared).

        Keys are stored without RoPE, so moving a frame in time only rewrites its positions.
        """
        positions = self.positions.clone()  # (n, 3)
        positions[:, TIME_AXIS] = time
        return FrameTokens(self.keys, self.values, positions, self.frame)


def split_frames(cache: KVCache, slots: Sequence[int] | None = None) -> list[FrameTokens]:
    """Per-frame views of the cache's tokens (no copy), for storage positions `slots` (all
    frames by default), in the order given.

    Shapes:
        each result holds `(B, H, n_f, Dh)` keys/values per layer and `(n_f, 3)` positions.

    Raises:
        ValueError: if the cache is empty and `slots` is not.
    """
    if slots is None:
        slots = range(cache.num_frames)
    if cache.is_empty:
        if len(slots):
            raise ValueError("cannot take frames of an empty cache")
        return []
    ranges = cache.frame_slices()
    parts = []
    for slot in slots:
        r = ranges[slot]
        parts.append(
            FrameTokens(
                tuple(k[:, :, r] for k in cache.keys),
                tuple(v[:, :, r] for v in cache.values),
                cache.positions[r],
                cache.frames[slot],
            )
        )
    return parts


def assemble(cache: KVCache, parts: Sequence[FrameTokens]) -> None:
    """Replace the cache's content by `parts`, in that order (one concatenation per layer).

    Shapes:
        all parts share `(B, H, ., Dh)`, dtype and device.

    Raises:
        ValueError: from `KVCache.append` on inconsistent parts.
    """
    parts = list(parts)  # the parts may be views of the tensors reset() releases
    cache.reset()
    if not parts:
        return
    keys = [torch.cat([p.keys[i] for p in parts], dim=2) for i in range(cache.num_layers)]
    values = [torch.cat([p.values[i] for p in parts], dim=2) for i in range(cache.num_layers)]
    positions = torch.cat([p.positions for p in parts], dim=0)  # (N, 3)
    cache.append(keys, values, positions, [p.frame for p in parts])


def pooled_grid(height: int, width: int, stride: int) -> tuple[int, int]:
    """Token grid after `stride x stride` pooling with partial edge patches: `ceil` per side."""
    return math.ceil(height / stride), math.ceil(width / stride)


def pool_grid_tokens(x: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """Average `stride x stride` patches of a row-major token grid (RELIC §4.3 downsampling).

    Grids not divisible by `stride` keep **partial edge patches**: the last row/column of
    patches covers the `height mod stride` (`width mod stride`) remaining tokens and averages
    only those (the grid is zero-padded to a multiple of `stride`, patch sums are divided by
    the number of real tokens in each patch). No token is dropped and no padding enters a
    mean. Computed in float32, cast back.

    Shapes:
        x: `(..., height * width, D)`; returns `(..., ceil(height/s) * ceil(width/s), D)`.

    Raises:
        ValueError: if `stride < 1` or the token axis is not `height * width`.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if x.shape[-2] != height * width:
        raise ValueError(f"{x.shape[-2]} tokens do not form a {height}x{width} grid")
    if stride == 1:
        return x
    new_h, new_w = pooled_grid(height, width, stride)
    pad_h, pad_w = new_h * stride - height, new_w * stride - width
    grid = x.float().unflatten(-2, (height, width))  # (..., h, w, D)
    grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))  # (..., h' s, w' s, D)
    sums = rearrange(grid, "... (y p) (x q) d -> ... y x (p q) d", p=stride, q=stride).sum(-2)
    valid = F.pad(x.new_ones(height, width, dtype=torch.float32), (0, pad_w, 0, pad_h))
    counts = rearrange(valid, "(y p) (x q) -> y x (p q)", p=stride, q=stride).sum(-1)  # (h', w')
    means = sums / counts[..., None]  # (..., h', w', D)
    return means.flatten(-3, -2).to(x.dtype)  # (..., h' w', D)


def pool_frame(part: FrameTokens, stride: int) -> FrameTokens:
    """Spatially downsample one cached frame by `stride` per side (RELIC §4.3).

    Keys (stored without RoPE, pose embedding included) and values are averaged over each
    `stride x stride` token patch; the positions are averaged the same way, so a pooled token
    sits at the **centre of its patch** in the frame's original token grid: fractional
    (row, column), e.g. `(1.5, 1.5)` for the first 4x4 patch, and the frame's unchanged
    temporal index. RoPE is applied at read time from these positions, so pooled tokens keep
    their place relative to full-resolution tokens of the same and other frames. Partial edge
    patches (grid not divisible by `stride`) average the tokens they cover, and their centre is
    the mean position of those tokens (see `pool_grid_tokens`).

    Shapes:
        part: `(B, H, h * w, Dh)` per layer, positions `(h * w, 3)`;
        returns `(B, H, h' * w', Dh)` per layer, positions `(h' * w', 3)`, `h' = ceil(h / s)`.

    Raises:
        ValueError: if `stride < 1`.
    """
    frame = part.frame
    h, w = frame.height, frame.width
    if stride == 1:
        return part
    new_h, new_w = pooled_grid(h, w, stride)
    return FrameTokens(
        tuple(pool_grid_tokens(k, h, w, stride) for k in part.keys),
        tuple(pool_grid_tokens(v, h, w, stride) for v in part.values),
        pool_grid_tokens(part.positions, h, w, stride),  # (h' w', 3) patch centres
        CachedFrame(frame.index, new_h, new_w),
    )
