"""`relic`: rolling window + spatially compressed memory with RELIC's schedule (§4.3, §5.1)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from memory_testing import snapshot, synthetic_write

from reverie.memory import RELIC_SCHEDULE, RelicConfig, RelicPolicy, split_frames
from reverie.memory.cache_ops import pool_grid_tokens
from reverie.models import KVCache


def _stream(policy: RelicPolicy, num_frames: int, generator, grid=(4, 4)):
    cache, written = KVCache(2), {}
    sizes = [1] + [3] * math.ceil((num_frames - 1) / 3)
    for size in sizes:
        latents = synthetic_write(cache, size, generator, grid)
        written.update(snapshot(cache, size))
        policy.after_write(cache, latents)
    return cache, written


def test_schedule_is_the_papers() -> None:
    assert RELIC_SCHEDULE == (1, 4, 2, 4, 4, 4, 2, 4, 4, 2, 4, 4, 4, 2, 4, 4, 2, 4)
    config = RelicConfig()
    assert [config.factor(i) for i in (0, 1, 2, 17, 18, 19, 20)] == [1, 4, 2, 4, 1, 4, 2]
    with pytest.raises(ValueError, match="schedule"):
        RelicConfig(schedule=(1, 0))


def test_factors_follow_the_schedule_outside_the_window(generator) -> None:
    policy = RelicPolicy(RelicConfig(window_frames=6))
    cache, _ = _stream(policy, 40, generator)
    newest = cache.next_frame - 1
    for frame in cache.frames:
        s = 1 if frame.index > newest - 6 else RELIC_SCHEDULE[frame.index % 18]
        assert (frame.height, frame.width) == (4 // s, 4 // s), frame
    assert cache.frame_indices == list(range(newest + 1))  # all history is kept


def test_pooled_tokens_are_patch_means_at_patch_centres(generator) -> None:
    policy = RelicPolicy(RelicConfig(window_frames=2))
    cache, written = _stream(policy, 10, generator)
    parts = {p.frame.index: p for p in split_frames(cache)}
    for index, s in [(1, 4), (2, 2), (3, 4)]:
        part, original = parts[index], written[index]
        for got, raw in zip(part.keys + part.values, original.keys + original.values, strict=True):
            torch.testing.assert_close(got, pool_grid_tokens(raw, 4, 4, s), rtol=0, atol=1e-6)
        centres = [(s - 1) / 2 + s * i for i in range(4 // s)]
        expected = [[index, r, c] for r in centres for c in centres]
        assert part.positions.tolist() == expected
    for index in (0, 8, 9):  # factor 1 and the window: exactly as written
        assert torch.equal(parts[index].keys[0], written[index].keys[0])


def test_frames_are_pooled_once(generator) -> None:
    policy = RelicPolicy(RelicConfig(window_frames=2))
    cache, _ = _stream(policy, 10, generator)
    before = {p.frame.index: p.to("cpu") for p in split_frames(cache)}
    for _ in range(3):
        policy.after_write(cache, synthetic_write(cache, 3, generator))
    for part in split_frames(cache):
        if part.frame.index in before and part.frame.index < 7:
            assert torch.equal(part.keys[1], before[part.frame.index].keys[1])


def test_non_divisible_grid_keeps_partial_patches(generator) -> None:
    policy = RelicPolicy(RelicConfig(window_frames=1, schedule=(2,)))
    cache, written = _stream(policy, 4, generator, grid=(3, 5))
    part = split_frames(cache, [0])[0]
    assert (part.frame.height, part.frame.width) == (2, 3)
    assert part.positions[:, 1:].tolist() == [[r, c] for r in (0.5, 2.0) for c in (0.5, 2.5, 4.0)]
    raw = written[0].keys[0][0, 0].reshape(3, 5, -1)  # (h, w, Dh)
    torch.testing.assert_close(part.keys[0][0, 0, -1], raw[2, 4], rtol=0, atol=0)  # 1-token patch
    torch.testing.assert_close(part.keys[0][0, 0, 0], raw[:2, :2].mean((0, 1)), rtol=0, atol=1e-6)


def test_memory_grows_about_six_times_slower_than_full(generator) -> None:
    """RELIC §4.3: ~4x fewer tokens over 20 s; 81 latent frames at 480x832 (30x52 tokens per
    frame) keep ~30K of 126K tokens."""
    policy = RelicPolicy()
    cache, _ = _stream(policy, 81, generator, grid=(30, 52))
    full = 81 * 30 * 52
    assert full == 126_360
    assert 29_000 < cache.num_tokens < 33_000 and policy.num_tokens(cache) == cache.num_tokens
    small, _ = _stream(RelicPolicy(), 81, generator)
    assert 81 * 16 / small.num_tokens > 3.5


def test_within_the_horizon_the_schedule_is_exact_and_past_it_tokens_grow_logarithmically(
    generator,
) -> None:
    horizon, minutes = 80, 10
    num_frames = minutes * 60 * 4 + 1  # 4 latent frames per second
    bounded = RelicPolicy(RelicConfig(window_frames=6, horizon_frames=horizon))
    cache, _ = _stream(bounded, num_frames, generator)
    newest = cache.next_frame - 1
    for frame in cache.frames:
        age = newest - frame.index
        if age <= horizon:  # the paper's rule, exactly
            s = 1 if age < 6 else RELIC_SCHEDULE[frame.index % 18]
            assert (frame.height, frame.width) == (4 // s, 4 // s), frame
        elif frame.index == 0:
            assert frame.num_tokens == 16  # the start image is never re-pooled
        else:
            assert frame.num_tokens == 1
            assert frame.index % 2 ** math.ceil(math.log2(age / horizon)) == 0
    assert set(range(newest - horizon, newest + 1)) <= set(cache.frame_indices)
    octaves = math.ceil(math.log2(newest / horizon))
    within = sum(f.num_tokens for f in cache.frames if newest - f.index <= horizon)
    assert cache.num_tokens <= within + 16 + octaves * (horizon // 2 + 1)
    assert cache.num_tokens < 700  # the paper's rule alone would hold about 6,400


def test_max_tokens_caps_the_cache_by_dropping_the_oldest_long_range_frames(generator) -> None:
    config = RelicConfig(window_frames=6, horizon_frames=40)
    uncapped, _ = _stream(RelicPolicy(config), 600, torch.Generator().manual_seed(0))
    capped, _ = _stream(RelicPolicy(dataclasses.replace(config, max_tokens=250)), 600, generator)
    assert uncapped.num_tokens > 250 >= capped.num_tokens
    newest = capped.next_frame - 1
    assert set(range(newest - 40, newest + 1)) <= set(capped.frame_indices)  # horizon intact
    assert capped.frame_indices[0] == 0
    kept_long_range = [i for i in capped.frame_indices if 0 < i < newest - 40]
    assert (
        kept_long_range
        == [i for i in uncapped.frame_indices if 0 < i < newest - 40][-len(kept_long_range) :]
    )  # the newest long-range frames are the ones kept


def test_the_horizon_can_be_switched_off(generator) -> None:
    unbounded = RelicPolicy(RelicConfig(window_frames=6, horizon_frames=None))
    cache, _ = _stream(unbounded, 300, generator)
    assert cache.frame_indices == list(range(cache.next_frame))
    with pytest.raises(ValueError, match="horizon_frames"):
        RelicConfig(window_frames=6, horizon_frames=3)
