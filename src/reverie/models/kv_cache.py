"""Explicit KV cache for streaming (block-causal) generation with the Wan DiT.

Storage contract (what the model reads and writes):

- Per layer, keys and values of every cached token, `(B, H, N, Dh)`. **Keys are stored in
  attention space: RoPE is applied once, when a token is written**, at its stored position (the
  cache holds the model's `RotaryEmbedding3D`; a cache built without one stores keys as given,
  which suits bookkeeping tests). A memory policy that moves a frame in time (MAG's randomised
  start, LongLive's retrieved-frame time) rotates only that frame's keys by the position
  change (`FrameTokens.with_time`, `shift_time`); one that pools a frame spatially (RELIC §4.3)
  un-rotates it, pools and rotates it at the pooled positions (`cache_ops.pool_frame`). RoPE
  angles are linear in the position, so rotating by a change equals rotating afresh, up to
  float rounding. Pose conditioning (RELIC §4.1.2) is already included in the stored keys.
- One `positions (N, 3)` tensor shared by all layers: (latent frame, row, column) of each token,
  float32, fractional positions allowed.
- Per-frame bookkeeping (`CachedFrame`: absolute latent-frame index and token grid) in host
  memory, in storage order, so policies can select, drop or replace whole frames.

Storage is **preallocated** (issue 11): every layer's keys and values live in one buffer per
tensor with spare capacity, and the cached tokens are the contiguous range `[start, end)` of it.
Appending a block writes into the spare tail; dropping frames closes each gap by moving the
smaller side of the range (a rolling window with a sink moves the sink, never the window);
replacing a frame by a smaller one (pooling) does the same. The buffer grows geometrically (to
twice the tokens it must hold) and is compacted to its front when the tail runs out, so each of
these costs O(block) amortised, never O(cache). A forward reads the cached keys as views
(`past_for_layers`) and writes its own chunk's keys into the spare tail, so attention needs no
concatenation either. Under autograd (a training algorithm that back-propagates through the
cache) in-place writes would break the graph, so a cache whose writes require grad stores by
concatenation instead, with the same results.

Storage dtype (`storage_dtype`, RELIC §4.5): as written (default), `torch.bfloat16`, or
`torch.float8_e4m3fn` with one float32 scale per (batch, head, token) (`amax / 448`); FP8 keys
and values are dequantised to float32 when read, so a forward copies them.

Everything in the cache is visible to every query of the next forward (the cache holds context,
never the future); *which* frames stay is decided by the engine / memory policies, never by the
attention forward. The model only reads the cache and, when asked (`write_cache=True`), appends
the current chunk with one `append` call after its last block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from reverie.models.attention import PastKeyValues
from reverie.models.rope import TIME_AXIS, RotaryEmbedding3D, apply_rotary

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
STORAGE_DTYPES = (None, torch.float32, torch.bfloat16, FP8)


@dataclass(frozen=True)
class CachedFrame:
    """One cached latent frame: its absolute index and the (rows, columns) of its token grid."""

    index: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        return self.height * self.width


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x (B, H, n, Dh)` as float8_e4m3fn with one float32 scale `(B, H, n, 1)` per token and
    head (`amax / 448`); `data.float() * scale` dequantises (RELIC §4.5)."""
    scale = x.detach().abs().amax(-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    return (x.float() / scale).to(FP8), scale


def rotate(
    keys: torch.Tensor, positions: torch.Tensor, rope: RotaryEmbedding3D | None
) -> torch.Tensor:
    """Keys `(B, H, n, Dh)` rotated by RoPE at `positions (n, 3)`; unchanged without `rope`.

    A negative position un-rotates: `rotate(rotate(k, p), -p) == k` up to rounding.
    """
    if rope is None:
        return keys
    return apply_rotary(keys, *rope(positions))


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device` (CUDA: free device memory; CPU on Linux:
    `MemAvailable`), or None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_memory(new_bytes: int, device: torch.device, num_frames: int) -> None:
    """Raise a clear `MemoryError` before a storage growth that would not fit.

    Raises:
        MemoryError: when `new_bytes` exceed 90% of what `device` has left.
    """
    free = available_memory(device)
    if free is not None and new_bytes > 0.9 * free:
        raise MemoryError(
            f"the KV cache of {num_frames} latent frames needs {new_bytes / 2**20:.0f} MB more "
            f"on {device}, but only {free / 2**20:.0f} MB are free; use a bounded memory policy "
            f"(window, relic, mag, retrieval), a shorter stream or a smaller storage dtype"
        )


class KVCache:
    """Per-layer K/V of past latent frames with per-token positions and per-frame bookkeeping.

    Args:
        num_layers: transformer blocks (one K/V pair each).
        rope: the model's RoPE, applied to keys when written (`WanDiT.new_cache` passes it);
            None stores keys as given.
        storage_dtype: dtype keys and values are stored in: None (as written), float32,
            bfloat16 or float8_e4m3fn (scaled per token and head).

    Shapes:
        keys[i], values[i]: `(B, H, N, Dh)` for layer i (keys with RoPE at `positions`).
        positions: `(N, 3)` float32 (latent frame, row, column).

    Raises:
        ValueError: `num_layers < 1` or an unsupported `storage_dtype`.
    """

    def __init__(
        self,
        num_layers: int,
        rope: RotaryEmbedding3D | None = None,
        storage_dtype: torch.dtype | None = None,
    ) -> None:
        if num_layers < 1:
            raise ValueError("a KVCache needs at least one layer")
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(
                f"storage_dtype must be one of float32, bfloat16, float8_e4m3fn or None, "
                f"got {storage_dtype}"
            )
        self.num_layers = num_layers
        self.rope = rope
        self.storage_dtype = storage_dtype
        self.reset()

    def reset(self) -> None:
        """Drop everything and free the storage (start of a new episode)."""
        self._k: list[torch.Tensor | None] = [None] * self.num_layers  # (B, H, C, Dh)
        self._v: list[torch.Tensor | None] = [None] * self.num_layers
        self._k_scale: list[torch.Tensor | None] = [None] * self.num_layers  # FP8: (B, H, C, 1)
        self._v_scale: list[torch.Tensor | None] = [None] * self.num_layers
        self._pos: torch.Tensor | None = None  # (C, 3)
        self._start = self._end = 0
        self._functional = False  # writes require grad: store by concatenation
        self.frames: list[CachedFrame] = []

    def clear(self) -> None:
        """Drop every cached frame but keep the storage for the next writes (a policy that
        rebuilds the cache each block, `cache_ops.assemble`, reuses it)."""
        if self._functional:
            self.reset()
            return
        self.frames = []
        self._start = self._end = 0

    # ----------------------------------------------------------------- properties (host only)
    @property
    def is_empty(self) -> bool:
        return not self.frames

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def num_tokens(self) -> int:
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Tokens the storage can hold without reallocating."""
        return 0 if self._pos is None else self._pos.shape[0]

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
        """Bytes of the cached tokens' keys and values over all layers, FP8 scales included
        (positions excluded: 12 B per token; spare capacity excluded: see `capacity_nbytes`)."""
        return self.num_tokens * self._bytes_per_token()

    @property
    def capacity_nbytes(self) -> int:
        """Bytes allocated for keys and values, spare capacity included."""
        return self.capacity * self._bytes_per_token()

    def _bytes_per_token(self) -> int:
        if self._k[0] is None:
            return 0
        total = 0
        for tensors in (self._k, self._v, self._k_scale, self._v_scale):
            for t in tensors:
                if t is not None:
                    total += t.shape[0] * t.shape[1] * t.shape[3] * t.element_size()
        return total

    def frame_slices(self) -> list[slice]:
        """Token range of each cached frame along the token axis, in storage order."""
        slices, start = [], 0
        for frame in self.frames:
            slices.append(slice(start, start + frame.num_tokens))
            start += frame.num_tokens
        return slices

    # ----------------------------------------------------------------------------- read
    @property
    def keys(self) -> list[torch.Tensor | None]:
        """Every layer's cached keys `(B, H, N, Dh)` (views; FP8 storage: dequantised copies)."""
        return [self._read(self._k, self._k_scale, i) for i in range(self.num_layers)]

    @property
    def values(self) -> list[torch.Tensor | None]:
        """Every layer's cached values `(B, H, N, Dh)` (views; FP8: dequantised copies)."""
        return [self._read(self._v, self._v_scale, i) for i in range(self.num_layers)]

    @property
    def positions(self) -> torch.Tensor | None:
        """`(N, 3)` float32 positions of the cached tokens (a view), None when empty."""
        return None if self.is_empty else self._pos[self._start : self._end]

    def _read(self, store, scales, i: int, start: int | None = None, end: int | None = None):
        if self.is_empty:
            return None
        start = self._start if start is None else start
        end = self._end if end is None else end
        data = store[i][:, :, start:end]
        if scales[i] is not None:
            return data.float() * scales[i][:, :, start:end]
        return data

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s cached `(keys, values)`, each `(B, H, N, Dh)`, keys with RoPE."""
        if self.is_empty:
            raise ValueError("the cache is empty")
        return self._read(self._k, self._k_scale, index), self._read(self._v, self._v_scale, index)

    def past_for_layers(self, room: int = 0) -> list[PastKeyValues | None]:
        """Every layer's context for the next forward of `room` tokens.

        With `room > 0` (and storage that is neither FP8 nor under autograd) each entry also
        carries `scratch`: views of the buffers over the cached tokens plus `room` spare
        tokens, into which the forward writes its chunk's keys and values instead of
        concatenating. Ensuring the spare room may compact or grow the storage (amortised
        O(room)); the cached tokens are unchanged.
        """
        if self.is_empty:
            return [None] * self.num_layers
        scratch_ok = room > 0 and not self._functional and self._k_scale[0] is None
        if scratch_ok:
            self._ensure_room(room)
        pasts = []
        for i in range(self.num_layers):
            keys = self._read(self._k, self._k_scale, i)
            values = self._read(self._v, self._v_scale, i)
            scratch = None
            if scratch_ok:
                end = self._end + room
                scratch = (self._k[i][:, :, self._start : end], self._v[i][:, :, self._start : end])
            pasts.append(PastKeyValues(keys, values, scratch))
        return pasts

    # ---------------------------------------------------------------------------- write
    def append(
        self,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
        positions: torch.Tensor,
        frames: Sequence[CachedFrame],
        *,
        with_rope: bool = False,
    ) -> None:
        """Append frames to the end of the cache (all layers at once).

        Tensors are not detached: write under `torch.no_grad()` unless the training algorithm
        back-propagates through the cache (then the cache stores by concatenation).

        Args:
            keys, values: one `(B, H, n, Dh)` tensor per layer.
            positions: `(n, 3)`; `frames` describe the n tokens in order.
            with_rope: the keys already carry RoPE at `positions` (as `FrameTokens` and
                `keys` do); by default they are raw and the cache rotates them.

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
        if not self.is_empty and tuple(keys[0].shape[:2]) != tuple(self._k[0].shape[:2]):
            raise ValueError(
                f"batch/heads {tuple(keys[0].shape[:2])} differ from the cache's "
                f"{tuple(self._k[0].shape[:2])}"
            )
        positions = positions.float()
        if not with_rope:
            keys = [rotate(k, positions, self.rope) for k in keys]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (*keys, *values))
        if self.is_empty and (needs_grad or self._functional or not self._fits(keys[0], values[0])):
            self.reset()  # a fresh storage (dtypes, batch and heads of this write)
            self._functional = needs_grad
        elif needs_grad and not self._functional:
            self._to_functional()
        if self._functional:
            self._append_functional(keys, values, positions)
        else:
            self._ensure_room(num_new, like=(keys[0], values[0], positions))
            end = self._end + num_new
            for i in range(self.num_layers):
                self._store(self._k, self._k_scale, i, self._end, keys[i])
                self._store(self._v, self._v_scale, i, self._end, values[i])
            self._pos[self._end : end] = positions
            self._end = end
        self.frames.extend(frames)

    def select_frames(self, slots: Sequence[int]) -> None:
        """Keep only the cached frames at storage positions `slots`, in that order.

        The primitive that eviction policies (rolling window, sink, retrieval) build on.
        Increasing `slots` keep the storage in place and close each gap by moving the smaller
        side; any other order gathers the kept tokens. Host bookkeeping, no device sync.

        Raises:
            IndexError: on a slot outside the cache.
        """
        if any(not 0 <= s < self.num_frames for s in slots):
            raise IndexError(f"slots {list(slots)} outside a cache of {self.num_frames} frames")
        if not slots:
            self.reset()
            return
        slots = list(slots)
        if self._functional or any(b <= a for a, b in zip(slots, slots[1:], strict=False)):
            self._gather(slots)
            return
        kept = set(slots)
        for slot in reversed(range(self.num_frames)):  # back to front: earlier slots stay valid
            if slot not in kept:
                self._remove_tokens(slot, self.frames[slot].num_tokens)
                del self.frames[slot]

    def replace_frame(self, slot: int, keys, values, positions: torch.Tensor, frame: CachedFrame):
        """Replace the frame at storage position `slot` by `frame`'s tokens (no more tokens
        than it had), e.g. its pooled version (RELIC §4.3) or a re-timed copy.

        Args:
            keys, values: one `(B, H, n, Dh)` tensor per layer, keys with RoPE at `positions`.
            positions: `(n, 3)`; `n = frame.num_tokens <= ` the replaced frame's tokens.

        Raises:
            ValueError: if the new frame has more tokens or inconsistent shapes.
        """
        old = self.frames[slot]
        n = frame.num_tokens
        if n > old.num_tokens or positions.shape != (n, 3) or any(k.shape[2] != n for k in keys):
            raise ValueError(
                f"a replacement of frame {old.index} ({old.num_tokens} tokens) needs at most "
                f"that many tokens; got {n} with positions {tuple(positions.shape)}"
            )
        if self._functional:
            self._replace_functional(slot, keys, values, positions, frame)
            return
        self._remove_tokens(slot, old.num_tokens - n)  # the frame's last tokens
        offset = self._start + self.frame_slices()[slot].start  # earlier frames are unchanged
        for i in range(self.num_layers):
            self._store(self._k, self._k_scale, i, offset, keys[i])
            self._store(self._v, self._v_scale, i, offset, values[i])
        self._pos[offset : offset + n] = positions.float()
        self.frames[slot] = frame

    def shift_time(self, offset: float) -> None:
        """Move every cached frame `offset` latent frames later: frame indices, temporal
        positions, and the keys' temporal rotation (MAG's randomised RoPE start, §3.4)."""
        if self.is_empty:
            return
        delta = torch.zeros(self.num_tokens, 3, device=self._pos.device)
        delta[:, TIME_AXIS] = offset
        keys, values, positions = self.keys, self.values, self.positions + delta
        keys = [rotate(k, delta, self.rope) for k in keys]
        frames = [replace(f, index=f.index + int(offset)) for f in self.frames]
        functional = self._functional
        self.reset()
        self._functional = functional
        self.append(keys, values, positions, frames, with_rope=True)

    def frame_positions(self) -> torch.Tensor:
        """Temporal position of every cached token, `(N,)` float32 (a view of `positions`)."""
        if self.is_empty:
            raise ValueError("the cache is empty")
        return self.positions[:, TIME_AXIS]

    # ------------------------------------------------------------------------ internals
    def _store(self, store, scales, i: int, at: int, x: torch.Tensor) -> None:
        n = x.shape[2]
        if scales[i] is not None:  # FP8 with a scale per (batch, head, token)
            data, scale = quantize_fp8(x)
            scales[i][:, :, at : at + n] = scale
            store[i][:, :, at : at + n] = data
        else:
            store[i][:, :, at : at + n] = x

    def _fits(self, keys: torch.Tensor, values: torch.Tensor) -> bool:
        """Whether the allocated storage can take writes of these tensors' batch, heads and
        dtypes (only asked of an empty cache)."""
        k = self._k[0]
        if k is None:
            return False
        return (
            k.shape[:2] == keys.shape[:2]
            and k.shape[3] == keys.shape[3]
            and k.device == keys.device
            and (
                self.storage_dtype is not None
                or (k.dtype, self._v[0].dtype) == (keys.dtype, values.dtype)
            )
        )

    def _ensure_room(self, room: int, like=None) -> None:
        """Make `[end, end + room)` free: compact to the front or grow (to twice what the
        storage must hold). `like`: (keys, values, positions) fixing dtypes on first use."""
        if self._pos is not None and self._end + room <= self.capacity:
            return
        needed = self.num_tokens + room
        capacity = self.capacity
        if capacity < needed or self.num_tokens > capacity // 2:
            capacity = 2 * needed
        if self._pos is None:
            k, v, pos = like
            batch, heads, _, dim = k.shape
            k_dtype = self.storage_dtype or k.dtype
            v_dtype = self.storage_dtype or v.dtype
            fp8 = self.storage_dtype is FP8
            for i in range(self.num_layers):
                self._k[i] = k.new_empty(batch, heads, capacity, dim, dtype=k_dtype)
                self._v[i] = v.new_empty(batch, heads, capacity, v.shape[3], dtype=v_dtype)
                if fp8:
                    self._k_scale[i] = k.new_empty(batch, heads, capacity, 1, dtype=torch.float32)
                    self._v_scale[i] = v.new_empty(batch, heads, capacity, 1, dtype=torch.float32)
            self._pos = pos.new_empty(capacity, 3, dtype=torch.float32)
            self._start = self._end = 0
            return
        if capacity == self.capacity:  # compact to the front in place: no reallocation, so
            n = self.num_tokens  # the allocator is not asked for buffers of this size again
            self._move(self._start, self._end, 0)
            self._start, self._end = 0, n
            return
        check_memory(capacity * self._bytes_per_token(), self._pos.device, self.num_frames)
        n = self.num_tokens
        for tensors in (self._k, self._v, self._k_scale, self._v_scale):
            for i, t in enumerate(tensors):
                if t is not None:
                    fresh = t.new_empty(*t.shape[:2], capacity, t.shape[3])
                    fresh[:, :, :n] = t[:, :, self._start : self._end]
                    tensors[i] = fresh
        fresh = self._pos.new_empty(capacity, 3)
        fresh[:n] = self._pos[self._start : self._end]
        self._pos, self._start, self._end = fresh, 0, n

    def _remove_tokens(self, slot: int, count: int) -> None:
        """Drop the last `count` tokens of the frame at `slot` by moving the smaller side of
        the cached range over them (the frame list is the caller's to update)."""
        if count == 0:
            return
        gap_end = self._start + self.frame_slices()[slot].stop
        gap_start = gap_end - count
        before, after = gap_start - self._start, self._end - gap_end
        if before <= after:  # move [start, gap_start) right by `count`
            self._move(self._start, gap_start, self._start + count)
            self._start += count
        else:  # move [gap_end, end) left by `count`
            self._move(gap_end, self._end, gap_start)
            self._end -= count

    def _move(self, src_start: int, src_end: int, dst_start: int) -> None:
        if src_end <= src_start:
            return
        n = src_end - src_start
        for tensors in (self._k, self._v, self._k_scale, self._v_scale):
            for t in tensors:
                if t is not None:
                    t[:, :, dst_start : dst_start + n] = t[:, :, src_start:src_end].clone()
        self._pos[dst_start : dst_start + n] = self._pos[src_start:src_end].clone()

    def _gather(self, slots: list[int]) -> None:
        ranges = self.frame_slices()
        index = torch.cat([torch.arange(ranges[s].start, ranges[s].stop) for s in slots])
        index = (index + self._start).to(self._pos.device)  # (n_kept,)
        for tensors in (self._k, self._v, self._k_scale, self._v_scale):
            for i, t in enumerate(tensors):
                if t is not None:
                    tensors[i] = t.index_select(2, index)
        self._pos = self._pos.index_select(0, index)
        self._start, self._end = 0, index.numel()
        self.frames = [self.frames[s] for s in slots]

    def _to_functional(self) -> None:
        """Switch to storage by concatenation (exact-size tensors), keeping the content."""
        for tensors in (self._k, self._v, self._k_scale, self._v_scale):
            for i, t in enumerate(tensors):
                if t is not None:
                    tensors[i] = t[:, :, self._start : self._end].clone()
        self._pos = self._pos[self._start : self._end].clone()
        self._start, self._end, self._functional = 0, self._pos.shape[0], True

    def _append_functional(self, keys, values, positions: torch.Tensor) -> None:
        fp8 = self.storage_dtype is FP8
        for i in range(self.num_layers):
            pairs = ((self._k, self._k_scale, keys[i]), (self._v, self._v_scale, values[i]))
            for store, scales, x in pairs:
                if fp8:
                    data, scale = quantize_fp8(x)
                    scales[i] = scale if scales[i] is None else torch.cat([scales[i], scale], 2)
                else:
                    data = x if self.storage_dtype is None else x.to(self.storage_dtype)
                store[i] = data if store[i] is None else torch.cat([store[i], data], 2)
        self._pos = positions if self._pos is None else torch.cat([self._pos, positions], 0)
        self._start, self._end = 0, self._pos.shape[0]

    def _replace_functional(self, slot, keys, values, positions, frame) -> None:
        r = self.frame_slices()[slot]
        old_k, old_v, old_pos = self.keys, self.values, self.positions
        frames = [*self.frames[:slot], frame, *self.frames[slot + 1 :]]

        def spliced(old, new):
            return torch.cat([old[:, :, : r.start], new, old[:, :, r.stop :]], 2)

        new_k = [spliced(old_k[i], keys[i]) for i in range(self.num_layers)]
        new_v = [spliced(old_v[i], values[i]) for i in range(self.num_layers)]
        new_pos = torch.cat([old_pos[: r.start], positions.float(), old_pos[r.stop :]], 0)
        self.reset()
        self._functional = True
        self.append(new_k, new_v, new_pos, frames, with_rope=True)
