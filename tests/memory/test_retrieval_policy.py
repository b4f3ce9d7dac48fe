"""`retrieval`: LongLive-RAG sink + retrieved history + short window, fixed frame budget."""

from __future__ import annotations

import pytest
import torch
from memory_testing import CHANNELS, HEIGHT, WIDTH, snapshot, synthetic_write

from reverie.memory import (
    PooledLatentEmbedding,
    RetrievalConfig,
    RetrievalEmbedder,
    RetrievalEmbedderConfig,
    RetrievalPolicy,
    RetrievedTime,
    get_policy,
    split_frames,
)
from reverie.models import KVCache
from reverie.models.kv_cache import FP8

SMALL = dict(sink_frames=1, window_frames=3, top_k=2, exclude_recent=2)


def _stream(policy, generator, blocks=(1, 3, 3, 3, 3, 3, 3, 3, 3), latents_for=None):
    cache, written, frames = KVCache(2), {}, {}
    for size in blocks:
        latents = synthetic_write(cache, size, generator)
        if latents_for is not None:
            latents = latents_for(cache.frame_indices[-size:], latents)
        for j, index in enumerate(cache.frame_indices[-size:]):
            frames[index] = latents[:, j]
        written.update(snapshot(cache, size))
        policy.after_write(cache, latents)
        yield cache, written, frames


def test_retrieves_the_true_top_k_by_cosine_excluding_recent(generator) -> None:
    policy = RetrievalPolicy(RetrievalConfig(**SMALL))
    embed = PooledLatentEmbedding(4)
    checked = 0
    for cache, _, frames in _stream(policy, generator):
        bank = [p.frame.index for p in policy.bank]
        assert bank == sorted(bank) and set(bank).isdisjoint(policy.sink_indices)
        candidates = bank[: len(bank) - 2]  # the 2 most recently evicted are excluded
        query = embed(frames[cache.next_frame - 1])[0]
        scores = {i: float(embed(frames[i])[0] @ query) for i in candidates}
        expected = sorted(sorted(scores, key=scores.get, reverse=True)[:2])
        assert policy.retrieved_indices == expected
        checked += bool(expected)
        # layout: [sink | retrieved | window]
        window = [i for i in range(1, cache.next_frame) if i not in bank][-3:]
        assert cache.frame_indices == policy.sink_indices + expected + window
    assert checked > 3


def test_a_recently_evicted_duplicate_is_not_retrieved(generator) -> None:
    """Make every frame equal to the newest one: only non-recent frames may come back."""
    policy = RetrievalPolicy(RetrievalConfig(**SMALL))
    same = torch.randn(1, 1, CHANNELS, HEIGHT, WIDTH, generator=generator)

    def latents_for(indices, latents):
        latents = latents.clone()
        latents[:, -1:] = same  # the newest frame of each block, and thus the query
        return latents

    for _ in _stream(policy, generator, latents_for=latents_for):
        recent = [p.frame.index for p in policy.bank][-2:]
        assert set(policy.retrieved_indices).isdisjoint(recent)


@pytest.mark.parametrize("placement", list(RetrievedTime))
def test_retrieved_frames_keep_their_tokens_and_get_the_configured_time(placement, generator):
    policy = get_policy("retrieval", retrieved_time=placement, **SMALL)
    for cache, written, _ in _stream(policy, generator):
        for part in split_frames(cache):
            original = written[part.frame.index]
            assert torch.equal(part.keys[0], original.keys[0])
            assert torch.equal(part.positions[:, 1:], original.positions[:, 1:])
            retrieved = part.frame.index in policy.retrieved_indices
            expected = 0 if retrieved and placement is RetrievedTime.ZERO else part.frame.index
            assert part.positions[:, 0].eq(expected).all()
    assert policy.retrieved_indices


def test_budget_and_accounting(generator) -> None:
    policy = RetrievalPolicy(RetrievalConfig(**SMALL))
    for cache, _, _ in _stream(policy, generator):
        assert cache.num_frames <= policy.max_frames == 6
        bank_tokens = sum(p.num_tokens for p in policy.bank)
        assert policy.num_tokens(cache) == cache.num_tokens + bank_tokens
        bank_bytes = sum(p.nbytes for p in policy.bank)
        assert policy.nbytes(cache) >= cache.nbytes + bank_bytes  # + embeddings
    assert len(policy.bank) == cache.next_frame - 1 - 3  # all but the sink and the window
    embedding_bytes = (len(policy.bank) + 3) * 4 * 16 * 4  # window + bank, (1, C 4 4) float32
    assert policy.nbytes(cache) == cache.nbytes + bank_bytes + embedding_bytes
    cache_storage = cache.keys[0].untyped_storage().data_ptr()
    for part in policy.bank:  # offloaded copies, not views of the cache
        assert part.keys[0].untyped_storage().data_ptr() != cache_storage
        assert part.keys[0].device == torch.device("cpu")


def test_defaults_are_longlive_rag() -> None:
    config = get_policy("retrieval").config
    assert (config.sink_frames, config.top_k, config.window_frames, config.exclude_recent) == (
        1,
        6,
        5,
        5,
    )
    assert config.max_frames == 12 and config.retrieved_time is RetrievedTime.ZERO
    with pytest.raises(TypeError, match="RetrievedTime"):
        RetrievalConfig(retrieved_time="zero")


def test_embedder_module_gives_unit_vectors_and_trains(generator) -> None:
    embedder = RetrievalEmbedder(RetrievalEmbedderConfig(in_channels=CHANNELS, dim=32))
    x = torch.randn(5, CHANNELS, HEIGHT, WIDTH, generator=generator)
    e = embedder(x)
    assert e.shape == (5, 32)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(5))
    e[:, 0].sum().backward()
    assert embedder.stages[0].weight.grad.abs().sum() > 0
    policy = get_policy("retrieval", embed=embedder, **SMALL)
    for cache, _, _ in _stream(policy, generator):
        assert cache.num_frames <= 6
    assert len(policy.retrieved_indices) == 2 and cache.num_frames == 6


def test_pooled_embedding_is_normalised(generator) -> None:
    e = PooledLatentEmbedding(2)(torch.randn(3, CHANNELS, HEIGHT, WIDTH, generator=generator))
    assert e.shape == (3, CHANNELS * 4)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="grid"):
        PooledLatentEmbedding(0)


@pytest.mark.parametrize(
    ("storage", "bank"), [(torch.bfloat16, torch.bfloat16), (FP8, torch.bfloat16)]
)
def test_the_offloaded_history_is_kept_in_the_storage_dtype(storage, bank, generator) -> None:
    policy = RetrievalPolicy(RetrievalConfig(**SMALL))
    cache = KVCache(2, storage_dtype=storage)
    for size in (1, 3, 3, 3, 3, 3, 3):
        policy.after_write(cache, synthetic_write(cache, size, generator))
    assert policy.bank and all(p.keys[0].dtype == bank for p in policy.bank)
    assert policy.retrieved_indices and set(policy.retrieved_indices) <= set(cache.frame_indices)
    per_token = 2 * 2 * 2 * 8 * 2  # layers x (K, V) x heads x head dim x 2 bytes
    assert all(p.nbytes == p.num_tokens * per_token for p in policy.bank)
