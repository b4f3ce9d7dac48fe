"""`mag`: last frame per block, written by a memory model with empty text (MAG §3.3-3.4)."""

from __future__ import annotations

import pytest
import torch
from memory_testing import CHANNELS, HEIGHT, TEXT_DIM, TEXT_LEN, WIDTH, synthetic_write, tiny_model

from reverie.memory import MagConfig, MagPolicy, get_policy, write_block
from reverie.models import KVCache


def test_keeps_the_last_frame_of_every_block(generator) -> None:
    policy, cache = MagPolicy(MagConfig(max_frames=None)), KVCache(2)
    for size in [1, 3, 3, 3, 2]:
        policy.after_write(cache, synthetic_write(cache, size, generator))
    assert cache.frame_indices == [0, 3, 6, 9, 11]
    assert cache.frame_positions().unique().tolist() == [0.0, 3.0, 6.0, 9.0, 11.0]
    assert policy.num_tokens(cache) == 5 * 16 and policy.max_frames is None


def test_bounded_memory_keeps_a_sink(generator) -> None:
    policy, cache = MagPolicy(MagConfig(max_frames=4, sink_frames=1)), KVCache(2)
    for size in [3] * 7:
        policy.after_write(cache, synthetic_write(cache, size, generator))
    assert cache.frame_indices == [2, 14, 17, 20]
    with pytest.raises(ValueError, match="max_frames"):
        MagConfig(max_frames=1, sink_frames=1)


class _Spy(torch.nn.Module):
    """Records the text each call received, then runs the wrapped model."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.texts = model, []

    def forward(self, x, t, context, **kwargs):
        self.texts.append(context)
        return self.model(x, t, context, **kwargs)


def test_the_memory_model_writes_with_empty_text(generator) -> None:
    generator_model, memory_model = _Spy(tiny_model(seed=0)), _Spy(tiny_model(seed=1))
    policy = get_policy("mag", writer=memory_model)
    assert policy.write_spec.model is memory_model and policy.write_spec.empty_text
    text = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=generator)
    empty = torch.zeros(1, 3, TEXT_DIM)
    block = torch.randn(1, 3, CHANNELS, HEIGHT, WIDTH, generator=generator)
    cache = memory_model.model.new_cache()
    with torch.no_grad():
        write_block(policy, cache, generator_model, block, text, empty_context=empty)
        expected = memory_model.model.new_cache()
        memory_model.model(block, torch.zeros(1), empty, cache=expected, write_cache=True)
    assert generator_model.texts == [] and len(memory_model.texts) == 1
    assert memory_model.texts[0] is empty
    assert cache.frame_indices == [2]  # only the block's last frame is kept
    last = slice(2 * 16, 3 * 16)
    assert torch.equal(cache.keys[1], expected.keys[1][:, :, last])
    with pytest.raises(ValueError, match="empty_context"):
        write_block(policy, cache, generator_model, block, text)


def test_without_a_memory_model_the_generator_writes(generator) -> None:
    model = _Spy(tiny_model())
    policy = MagPolicy(MagConfig(write_with_empty_text=False))
    text = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=generator)
    block = torch.randn(1, 3, CHANNELS, HEIGHT, WIDTH, generator=generator)
    cache = model.model.new_cache()
    with torch.no_grad():
        write_block(policy, cache, model, block, text)
    assert model.texts == [text] and cache.frame_indices == [2]
