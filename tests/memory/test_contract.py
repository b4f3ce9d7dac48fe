"""The contract every registered memory policy satisfies (STYLE §8: one suite, all policies)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from memory_testing import (
    BLOCKS,
    SMALL_CONFIGS,
    snapshot,
    stream,
    synthetic_write,
    tiny_model,
)

from reverie.memory import MemoryPolicy, get_policy, policy_names, split_frames
from reverie.models import KVCache
from reverie.models.rope import TIME_AXIS

POLICIES = policy_names()


def _policy(name: str) -> MemoryPolicy:
    return get_policy(name, **SMALL_CONFIGS.get(name, {}))


def _check_cache(cache: KVCache, policy: MemoryPolicy, written: dict, newest: int) -> None:
    """Storage consistency, bounds, untouched full-resolution frames, positions."""
    n = cache.num_tokens
    assert cache.positions.shape == (n, 3)
    assert all(
        k.shape[2] == n and v.shape[2] == n for k, v in zip(cache.keys, cache.values, strict=True)
    )
    assert len(set(cache.frame_indices)) == cache.num_frames
    assert cache.nbytes == sum(t.numel() * t.element_size() for t in (*cache.keys, *cache.values))
    assert policy.num_tokens(cache) >= n and policy.nbytes(cache) >= cache.nbytes
    if policy.max_frames is not None:
        assert cache.num_frames <= policy.max_frames
    assert newest in cache.frame_indices  # the newest frame is always visible
    assert cache.next_frame == newest + 1
    for part in split_frames(cache):
        original = written[part.frame.index]
        time = part.positions[:, TIME_AXIS]
        assert torch.all(time == time[0]) and time[0] <= part.frame.index  # never in the future
        spatial, bound = part.positions[:, 1:], original.positions[:, 1:]
        assert torch.all(spatial >= bound.amin(0)) and torch.all(spatial <= bound.amax(0))
        if part.num_tokens == original.num_tokens:  # full resolution: exactly as written
            assert torch.equal(spatial, bound)
            assert all(torch.equal(a, b) for a, b in zip(part.keys, original.keys, strict=True))
            assert all(torch.equal(a, b) for a, b in zip(part.values, original.values, strict=True))
        else:
            assert part.num_tokens < original.num_tokens
            assert time[0] == part.frame.index
    newest_part = split_frames(cache, [cache.frame_indices.index(newest)])[0]
    assert newest_part.num_tokens == written[newest].num_tokens
    assert newest_part.positions[0, TIME_AXIS] == newest


def _synthetic_stream(policy: MemoryPolicy, seed: int = 0, check: bool = True) -> KVCache:
    generator = torch.Generator().manual_seed(seed)
    cache, written = KVCache(2), {}
    for size in BLOCKS:
        latents = synthetic_write(cache, size, generator)
        written.update(snapshot(cache, size))
        before = latents.clone()
        policy.after_write(cache, latents)
        assert torch.equal(latents, before)  # the policy never touches the engine's latents
        if check:
            _check_cache(cache, policy, written, newest=max(written))
    return cache


@pytest.mark.parametrize("name", POLICIES)
def test_policy_follows_the_protocol(name) -> None:
    policy = get_policy(name)
    assert isinstance(policy, MemoryPolicy) and policy.name == name
    assert dataclasses.is_dataclass(policy.config)
    field = next(iter(dataclasses.fields(policy.config)), None)
    if field is not None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(policy.config, field.name, getattr(policy.config, field.name))
    with pytest.raises(TypeError):
        get_policy(name, not_a_setting=1)


@pytest.mark.parametrize("name", POLICIES)
def test_stream_keeps_the_cache_consistent_and_bounded(name) -> None:
    _synthetic_stream(_policy(name))


@pytest.mark.parametrize("name", POLICIES)
def test_reset_empties_and_forgets(name) -> None:
    policy = _policy(name)
    first = _synthetic_stream(policy, check=False)
    first.reset()
    policy.reset()
    assert policy.num_tokens(first) == 0 and policy.nbytes(first) == 0
    again = _synthetic_stream(policy, check=False)
    fresh = _synthetic_stream(_policy(name), check=False)
    assert again.frame_indices == fresh.frame_indices
    assert torch.equal(again.positions, fresh.positions)
    assert all(torch.equal(a, b) for a, b in zip(again.keys, fresh.keys, strict=True))
    assert policy.num_tokens(again) == _policy_tokens_after_fresh_stream(name)


def _policy_tokens_after_fresh_stream(name: str) -> int:
    policy = _policy(name)
    return policy.num_tokens(_synthetic_stream(policy, check=False))


@pytest.mark.parametrize("name", POLICIES)
def test_bounded_policies_stay_within_budget_as_the_stream_grows(name) -> None:
    policy = _policy(name)
    cache = _synthetic_stream(policy, check=False)
    full_tokens = sum(BLOCKS) * cache.frames[-1].num_tokens
    if policy.max_frames is not None:
        assert cache.num_frames == policy.max_frames  # reached, never exceeded (checked above)
        assert cache.num_tokens < full_tokens / 4
    else:
        assert cache.num_tokens <= full_tokens


@pytest.mark.parametrize("name", POLICIES)
def test_streaming_a_tiny_model_gives_finite_outputs(name) -> None:
    generator = torch.Generator().manual_seed(0)
    policy = _policy(name)
    latents, cache = stream(tiny_model(), policy, 12, 3, generator)
    assert latents.shape == (1, 12, 4, 8, 8) and torch.isfinite(latents).all()
    assert cache.next_frame == 12
    assert all(torch.isfinite(k).all() for k in cache.keys)
    assert policy.num_tokens(cache) >= cache.num_tokens > 0


def test_full_policy_reproduces_plain_cached_streaming() -> None:
    model = tiny_model()
    plain, plain_cache = stream(model, None, 12, 3, torch.Generator().manual_seed(1))
    full, full_cache = stream(model, get_policy("full"), 12, 3, torch.Generator().manual_seed(1))
    assert torch.equal(plain, full)
    assert torch.equal(plain_cache.positions, full_cache.positions)
    assert all(torch.equal(a, b) for a, b in zip(plain_cache.keys, full_cache.keys, strict=True))


@pytest.mark.parametrize("name", [p for p in POLICIES if p != "full"])
def test_a_ten_minute_stream_holds_bounded_cache_tokens_and_storage(name) -> None:
    """10 minutes at 4 latent frames/s (2,400 frames, one per block as the default model),
    random K/V at the default model's 4x4 token grid and each policy's default settings."""
    generator, policy, cache = torch.Generator().manual_seed(0), get_policy(name), KVCache(2)
    tokens, capacity, peak = {}, {}, 0
    for index in range(2400):
        latents = synthetic_write(cache, 1, generator, grid=(4, 4))
        peak = max(peak, cache.num_tokens)
        policy.after_write(cache, latents)
        if index + 1 in (240, 2400):  # minute 1 and minute 10
            tokens[index + 1], capacity[index + 1] = cache.num_tokens, cache.capacity
    if name == "relic":  # the long-range level grows with the logarithm of the length
        assert tokens[240] < tokens[2400] < 1.6 * tokens[240]
    else:  # attended tokens are constant once the budget is reached
        assert tokens[2400] == tokens[240] == policy.max_frames * 16
    assert capacity[2400] <= 2 * (peak + 16)  # the storage does not grow either
