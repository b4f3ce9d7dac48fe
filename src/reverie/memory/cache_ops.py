"""Frame-level operations on a `KVCache`, built on its public API (`frame_slices`, `append`,
`clear`, `replace_frame`, `keys`/`values`/`positions`/`frames`): split a cache into per-frame
token groups, move a frame in time, pool a frame spatially, and rebuild a cache from frames.

Keys are held as the cache stores them, with RoPE at their positions (`kv_cache.py`); a frame
carries the cache's RoPE so that moving or pooling it rotates its keys accordingly.

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

from reverie.models.kv_cache import CachedFrame, KVCache, rotate
from reverie.models.rope import TIME_AXIS, RotaryEmbedding3D


@dataclass(frozen=True)
class FrameTokens:
    """The cached tokens of one latent frame, in every layer.

    Attributes:
        keys, values: one `(B, H, n, Dh)` tensor per layer (keys with RoPE at `positions`, as
            the cache stores them).
        positions: `(n, 3)` float32 (latent frame, row, column) of the n tokens.
        frame: bookkeeping (absolute index, token grid); `frame.num_tokens == n`.
        rope: the RoPE the keys carry (the cache's; None: keys are not rotated).
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    positions: torch.Tensor
    frame: CachedFrame
    rope: RotaryEmbedding3D | None = None

    @property
    def num_tokens(self) -> int:
        return self.frame.num_tokens

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values over all layers (positions excluded, as `KVCache.nbytes`)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def to(
        self, device: torch.device | str, copy: bool = True, dtype: torch.dtype | None = None
    ) -> FrameTokens:
        """The tokens on `device` (keys and values in `dtype`, default unchanged). By default
        always a copy, so the result never keeps a slice of a larger cache tensor alive (a
        view would pin the whole old tensor in memory)."""
        return FrameTokens(
            tuple(k.to(device, dtype=dtype, copy=copy) for k in self.keys),
            tuple(v.to(device, dtype=dtype, copy=copy) for v in self.values),
            self.positions.to(device, copy=copy),
            self.frame,
            self.rope,
        )

    def with_time(self, time: float) -> FrameTokens:
        """The same tokens placed at temporal RoPE position `time` (values shared).

        The keys are rotated along the time axis by the position change (new tensors; RoPE
        angles are linear in the position), and the positions rewritten.
        """
        positions = self.positions.clone()  # (n, 3)
        positions[:, TIME_AXIS] = time
        delta = positions - self.positions  # (n, 3): time only
        keys = tuple(rotate(k, delta, self.rope) for k in self.keys)
        return FrameTokens(keys, self.values, positions, self.frame, self.rope)


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
                cache.rope,
            )
        )
    return parts


def assemble(cache: KVCache, parts: Sequence[FrameTokens]) -> None:
    """Replace the cache's content by `parts`, in that order (one concatenation per layer,
    then one write into the cache's kept storage).

    Shapes:
        all parts share `(B, H, ., Dh)`, dtype and device; their keys carry the cache's RoPE.

    Raises:
        ValueError: from `KVCache.append` on inconsistent parts.
    """
    parts = list(parts)  # the parts may be views of the storage clear() hands back
    if not parts:
        cache.reset()
        return
    keys = [torch.cat([p.keys[i] for p in parts], dim=2) for i in range(cache.num_layers)]
    values = [torch.cat([p.values[i] for p in parts], dim=2) for i in range(cache.num_layers)]
    positions = torch.cat([p.positions for p in parts], dim=0)  # (N, 3)
    cache.clear()
    cache.append(keys, values, positions, [p.frame for p in parts], with_rope=True)


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

    Keys (pose embedding included) are un-rotated, and keys and values are averaged over
    each `stride x stride` token patch; the positions are averaged the same way, so a pooled
    token sits at the **centre of its patch** in the frame's original token grid: fractional
    (row, column), e.g. `(1.5, 1.5)` for the first 4x4 patch, and the frame's unchanged
    temporal index. The pooled keys are rotated at these positions, so pooled tokens keep
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
    rope = part.rope
    positions = pool_grid_tokens(part.positions, h, w, stride)  # (h' w', 3) patch centres
    keys = []
    for k in part.keys:
        raw = rotate(k.float(), -part.positions, rope)  # (B, H, h w, Dh) without RoPE
        keys.append(rotate(pool_grid_tokens(raw, h, w, stride), positions, rope).to(k.dtype))
    return FrameTokens(
        tuple(keys),
        tuple(pool_grid_tokens(v, h, w, stride) for v in part.values),
        positions,
        CachedFrame(frame.index, new_h, new_w),
        rope,
    )
