"""Frame-level cache operations: split/assemble round trip, spatial pooling of K/V/positions."""

from __future__ import annotations

import math

import pytest
import torch
from memory_testing import synthetic_write

from reverie.memory import assemble, pool_frame, split_frames
from reverie.memory.cache_ops import pool_grid_tokens
from reverie.models import CachedFrame, KVCache
from reverie.models.rope import grid_positions


def _explicit_pool(x: torch.Tensor, h: int, w: int, s: int) -> torch.Tensor:
    """Reference: mean over each (partial) s x s patch of a row-major grid. x: (h*w, D)."""
    grid = x.reshape(h, w, -1)
    rows = []
    for y in range(0, h, s):
        for c in range(0, w, s):
            rows.append(grid[y : y + s, c : c + s].reshape(-1, x.shape[-1]).mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize(("h", "w", "s"), [(4, 4, 2), (4, 4, 4), (3, 5, 2), (30, 52, 4), (7, 3, 4)])
def test_pooling_averages_whole_and_partial_patches(h, w, s, generator) -> None:
    x = torch.randn(2, 3, h * w, 6, generator=generator)
    pooled = pool_grid_tokens(x, h, w, s)
    assert pooled.shape == (2, 3, math.ceil(h / s) * math.ceil(w / s), 6)
    expected = _explicit_pool(x[1, 2], h, w, s)
    torch.testing.assert_close(pooled[1, 2], expected, rtol=0, atol=1e-6)


def test_pooled_positions_are_patch_centres() -> None:
    part = split_frames(_one_frame_cache(3, 5))[0]
    pooled = pool_frame(part, 2)
    assert pooled.frame == CachedFrame(7, 2, 3)
    expected = [[7, r, c] for r in (0.5, 2.0) for c in (0.5, 2.5, 4.0)]  # partial edges
    assert pooled.positions.tolist() == expected
    assert pool_frame(part, 1) is part


def test_split_and_assemble_round_trip(generator) -> None:
    cache = KVCache(2)
    synthetic_write(cache, 4, generator)
    keys, positions = [k.clone() for k in cache.keys], cache.positions.clone()
    parts = split_frames(cache)
    assemble(cache, parts[2:] + parts[:2])
    assert cache.frame_indices == [2, 3, 0, 1]
    assemble(cache, split_frames(cache, [2, 3, 0, 1]))
    assert torch.equal(cache.positions, positions)
    assert all(torch.equal(a, b) for a, b in zip(cache.keys, keys, strict=True))
    assemble(cache, [])
    assert cache.is_empty


def test_frame_copies_do_not_share_storage(generator) -> None:
    cache = KVCache(2)
    synthetic_write(cache, 2, generator)
    view = split_frames(cache, [1])[0]
    copy = view.to("cpu")
    assert view.keys[0].untyped_storage().data_ptr() == cache.keys[0].untyped_storage().data_ptr()
    assert copy.keys[0].untyped_storage().data_ptr() != cache.keys[0].untyped_storage().data_ptr()
    assert copy.nbytes == view.nbytes == 2 * 2 * view.keys[0].numel() * 4
    moved = copy.with_time(0.0)
    assert moved.positions[:, 0].eq(0).all() and copy.positions[:, 0].eq(1).all()


def test_empty_cache_has_no_frames() -> None:
    assert split_frames(KVCache(1)) == []
    with pytest.raises(ValueError, match="empty"):
        split_frames(KVCache(1), [0])


def _one_frame_cache(h: int, w: int) -> KVCache:
    cache = KVCache(1)
    k = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h * w, 1)
    cache.append([k], [k], grid_positions(1, h, w, 7), [CachedFrame(7, h, w)])
    return cache
