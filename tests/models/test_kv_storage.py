"""Preallocated KV-cache storage (issue 11): every storage operation equals the old
concatenating behaviour on random data; RoPE is applied once at write and moved exactly;
storage stays bounded under a rolling window; storage dtypes round-trip within their precision;
gradients still flow through a cache written under autograd."""

from __future__ import annotations

import random

import pytest
import torch

from reverie.memory import WindowPolicy, assemble, pool_frame, split_frames
from reverie.memory.cache_ops import pool_grid_tokens
from reverie.memory.window import WindowConfig
from reverie.models import CachedFrame, KVCache
from reverie.models.kv_cache import FP8, rotate
from reverie.models.rope import RopeConfig, RotaryEmbedding3D, apply_rotary, grid_positions

LAYERS, HEADS, DIM = 2, 2, 8


def _frame(gen: torch.Generator, index: int, h: int = 2, w: int = 3, grad: bool = False):
    """Random raw keys/values of one frame: (keys per layer, values per layer, positions, frame)."""
    n = h * w

    def tensor():
        return torch.randn(1, HEADS, n, DIM, generator=gen).requires_grad_(grad)

    keys = [tensor() for _ in range(LAYERS)]
    values = [tensor() for _ in range(LAYERS)]
    return keys, values, grid_positions(1, h, w, index), CachedFrame(index, h, w)


class _Reference:
    """The old storage: the cached frames as a list, read by concatenation."""

    def __init__(self) -> None:
        self.frames: list[tuple] = []

    def read(self):
        keys = [torch.cat([f[0][i] for f in self.frames], 2) for i in range(LAYERS)]
        values = [torch.cat([f[1][i] for f in self.frames], 2) for i in range(LAYERS)]
        return keys, values, torch.cat([f[2] for f in self.frames], 0), [f[3] for f in self.frames]


def _assert_same(cache: KVCache, ref: _Reference) -> None:
    if not ref.frames:
        assert cache.is_empty
        return
    keys, values, positions, frames = ref.read()
    assert cache.frames == frames and cache.num_tokens == positions.shape[0]
    assert torch.equal(cache.positions, positions)
    for a, b in zip((*cache.keys, *cache.values), (*keys, *values), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_storage_operations_equal_concatenation_on_random_data(seed) -> None:
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    cache, ref, index = KVCache(LAYERS), _Reference(), 0
    for _ in range(120):
        op = rng.choice(["append"] * 4 + ["drop", "permute", "pool", "assemble", "clear"])
        n = len(ref.frames)
        if op == "append" or n == 0:
            new = [_frame(gen, index + j) for j in range(rng.randint(1, 3))]
            index += len(new)
            cache.append(
                [torch.cat([f[0][i] for f in new], 2) for i in range(LAYERS)],
                [torch.cat([f[1][i] for f in new], 2) for i in range(LAYERS)],
                torch.cat([f[2] for f in new], 0),
                [f[3] for f in new],
            )
            ref.frames += new
        elif op == "drop":  # increasing slots: gaps closed in place
            slots = sorted(rng.sample(range(n), rng.randint(1, n)))
            cache.select_frames(slots)
            ref.frames = [ref.frames[s] for s in slots]
        elif op == "permute":  # any order: gathered
            slots = rng.sample(range(n), rng.randint(1, n))
            cache.select_frames(slots)
            ref.frames = [ref.frames[s] for s in slots]
        elif op == "pool":  # a frame replaced by fewer tokens
            slot = rng.randrange(n)
            old = ref.frames[slot][3]
            h, w = rng.randint(1, old.height), rng.randint(1, old.width)
            new = _frame(gen, old.index, h, w)
            cache.replace_frame(slot, new[0], new[1], new[2], new[3])
            ref.frames[slot] = new
        elif op == "assemble":
            slots = rng.sample(range(n), rng.randint(1, n))
            assemble(cache, split_frames(cache, slots))
            ref.frames = [ref.frames[s] for s in slots]
        else:
            cache.clear()
            ref.frames = []
        _assert_same(cache, ref)


def test_a_rolling_window_keeps_its_storage_bounded_and_moves_only_the_sink() -> None:
    gen = torch.Generator().manual_seed(0)
    policy, cache = WindowPolicy(WindowConfig(window_frames=9, sink_frames=3)), KVCache(LAYERS)
    capacities = []
    for index in range(600):
        k, v, p, f = _frame(gen, index)
        cache.append(k, v, p, [f])
        policy.after_write(cache, torch.zeros(1, 1, 1, 1, 1))
        capacities.append(cache.capacity)
        if index >= 12:
            assert cache.frame_indices == [0, 1, 2, *range(index - 8, index + 1)]
    assert max(capacities[50:]) == min(capacities[50:]) <= 2 * (12 + 1) * 6  # tokens


def test_keys_are_rotated_once_at_write_and_moved_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    rope = RotaryEmbedding3D(DIM, RopeConfig())
    cache = KVCache(LAYERS, rope=rope)
    k, v, p, f = _frame(gen, 5, 4, 4)
    cache.append(k, v, p, [f])
    torch.testing.assert_close(cache.keys[1], apply_rotary(k[1], *rope(p)), rtol=0, atol=0)
    part = split_frames(cache)[0]
    moved = part.with_time(0.0)  # retrieval's re-timed frame
    at_zero = p.clone()
    at_zero[:, 0] = 0
    torch.testing.assert_close(moved.keys[0], rotate(k[0], at_zero, rope), rtol=0, atol=1e-6)
    pooled = pool_frame(part, 2)  # un-rotate, pool, rotate at the pooled positions
    expected = rotate(pool_grid_tokens(k[0], 4, 4, 2), pooled.positions, rope)
    torch.testing.assert_close(pooled.keys[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled.values[1], pool_grid_tokens(v[1], 4, 4, 2))
    cache.shift_time(3)  # MAG's randomised start
    assert cache.frame_indices == [8]
    torch.testing.assert_close(cache.keys[0], rotate(k[0], p + torch.tensor([3.0, 0, 0]), rope))


@pytest.mark.parametrize(
    ("dtype", "tolerance", "ratio"), [(torch.bfloat16, 2**-8, 0.5), (FP8, 2**-4, 0.375)]
)
def test_storage_dtypes_round_trip_within_their_precision(dtype, tolerance, ratio) -> None:
    gen = torch.Generator().manual_seed(2)
    exact, small = KVCache(LAYERS), KVCache(LAYERS, storage_dtype=dtype)
    for index in range(4):
        k, v, p, f = _frame(gen, index)
        exact.append(k, v, p, [f])
        small.append(k, v, p, [f])
    small.select_frames([0, 2, 3])
    exact.select_frames([0, 2, 3])
    for a, b in zip((*small.keys, *small.values), (*exact.keys, *exact.values), strict=True):
        bound = tolerance * b.abs().amax(-1, keepdim=True)  # per token and head
        assert torch.all((a.float() - b).abs() <= bound)
    assert small.nbytes == pytest.approx(ratio * exact.nbytes)  # FP8: 1 B + a 4 B scale / 8


def test_a_cache_written_under_autograd_passes_gradients() -> None:
    gen = torch.Generator().manual_seed(3)
    cache, frames = KVCache(LAYERS), [_frame(gen, i, grad=True) for i in range(3)]
    for k, v, p, f in frames:
        cache.append(k, v, p, [f])
    cache.select_frames([0, 2])
    small = _frame(gen, 2, 1, 1)
    cache.replace_frame(1, small[0], small[1], small[2], small[3])
    (sum(k.sum() for k in cache.keys) + 2 * sum(v.sum() for v in cache.values)).backward()
    assert torch.equal(frames[0][0][0].grad, torch.ones_like(frames[0][0][0]))
    assert torch.equal(frames[0][1][1].grad, torch.full_like(frames[0][1][1], 2.0))
    for dropped in (frames[1][0][0], frames[2][0][0]):  # dropped, replaced
        assert dropped.grad is None or not dropped.grad.any()
