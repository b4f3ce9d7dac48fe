"""Block-causal attention and KV-cached streaming (CausVid, Self Forcing) == full forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_testing import conditioning, perturb_new_modules, tiny_config

from reverie.models import AttentionConfig, AttentionMode, CachedFrame, KVCache, WanDiT
from reverie.models.attention import block_causal_mask, prefix_attention, query_block_sizes

TOLERANCE = 1e-4
FRAMES = 6
STRIDE = 4  # Wan VAE temporal compression


def _causal_model(frames_per_block: int, generator: torch.Generator) -> WanDiT:
    torch.manual_seed(0)
    config = tiny_config(
        attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=frames_per_block)
    )
    model = WanDiT(config).eval()
    perturb_new_modules(model, generator)
    with torch.no_grad():
        model.head.head.weight.normal_()  # Wan zero-inits the head
    return model


def _video_range(start: int, end: int) -> slice:
    """Video frames encoded by latent frames [start, end) (frame 0 alone, then groups of 4)."""
    first = 0 if start == 0 else 1 + STRIDE * (start - 1)
    return slice(first, 1 + STRIDE * (end - 1))


@pytest.mark.parametrize("frames_per_block", [1, 3])
def test_cached_streaming_equals_block_causal_full_forward(frames_per_block, generator) -> None:
    model = _causal_model(frames_per_block, generator)
    x = torch.randn(2, FRAMES, 4, 4, 6, generator=generator)
    t = torch.rand(2, FRAMES, generator=generator)  # per-frame time (diffusion forcing)
    context = torch.randn(2, 5, 12, generator=generator)
    actions, (rotation, centre) = conditioning(2, 1 + STRIDE * (FRAMES - 1), generator)
    with torch.no_grad():
        full = model(x, t, context, actions=actions, poses=(rotation, centre))
        cache = model.new_cache()
        chunks = []
        for start in range(0, FRAMES, frames_per_block):
            end = start + frames_per_block
            video = _video_range(start, end)
            chunks.append(
                model(
                    x[:, start:end],
                    t[:, start:end],
                    context,
                    actions=actions[:, video],
                    poses=(rotation[:, video], centre[:, video]),
                    cache=cache,
                    write_cache=True,
                )
            )
    assert cache.frame_indices == list(range(FRAMES))
    assert (torch.cat(chunks, dim=1) - full).abs().max() <= TOLERANCE


def test_denoising_passes_do_not_write_the_cache(generator) -> None:
    """Self Forcing: several reads at noisy t, then one write pass on the clean block."""
    model = _causal_model(3, generator)
    x = torch.randn(1, 6, 4, 4, 6, generator=generator)
    context = torch.randn(1, 5, 12, generator=generator)
    cache = model.new_cache()
    with torch.no_grad():
        model(x[:, :3], torch.zeros(1), context, cache=cache, write_cache=True)
        keys_before = [k.clone() for k in cache.keys]
        noisy = [model(x[:, 3:], torch.full((1,), s), context, cache=cache) for s in (0.9, 0.5)]
        assert cache.num_frames == 3 and all(
            torch.equal(a, b) for a, b in zip(keys_before, cache.keys, strict=True)
        )
        written = model(x[:, 3:], torch.full((1,), 0.5), context, cache=cache, write_cache=True)
    torch.testing.assert_close(noisy[1], written, rtol=0, atol=0)
    assert cache.frame_indices == [0, 1, 2, 3, 4, 5]


def test_block_causal_hides_later_blocks_only(generator) -> None:
    model = _causal_model(3, generator)
    x = torch.randn(1, FRAMES, 4, 4, 6, generator=generator)
    t, context = torch.rand(1, generator=generator), torch.randn(1, 5, 12, generator=generator)
    changed = x.clone()
    changed[:, 5] += 1.0  # last frame of block 1
    with torch.no_grad():
        a, b = model(x, t, context), model(changed, t, context)
    assert torch.equal(a[:, :3], b[:, :3])  # block 0 cannot see block 1
    assert (a[:, 3] - b[:, 3]).abs().max() > TOLERANCE  # frame 3 sees frame 5 (same block)


def test_one_block_covering_the_clip_is_bidirectional(generator) -> None:
    causal = _causal_model(FRAMES, generator)
    bidirectional = WanDiT(causal.config.replace(attention=AttentionConfig())).eval()
    bidirectional.load_state_dict(causal.state_dict())
    x = torch.randn(1, FRAMES, 4, 4, 6, generator=generator)
    t, context = torch.rand(1, generator=generator), torch.randn(1, 5, 12, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(causal(x, t, context), bidirectional(x, t, context))


def test_prefix_attention_equals_masked_sdpa(generator) -> None:
    """The per-block prefix loop == SDPA with the block-causal boolean mask (chunk starts
    mid-block, with cached context)."""
    config = AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=3)
    tokens, offset, frames, num_context = 4, 4, 5, 8  # context = frames 2, 3
    sizes = query_block_sizes(config, frames, offset, tokens)
    assert sizes == [2 * tokens, 3 * tokens]  # frames 4-5 finish block 1, frames 6-8 are block 2
    q = torch.randn(1, 2, frames * tokens, 8, generator=generator)
    k = torch.randn(1, 2, num_context + frames * tokens, 8, generator=generator)
    v = torch.randn(1, 2, num_context + frames * tokens, 8, generator=generator)
    query_frames = torch.arange(offset, offset + frames).repeat_interleave(tokens)
    key_frames = torch.cat([torch.tensor([2, 3]).repeat_interleave(tokens), query_frames])
    mask = block_causal_mask(query_frames, key_frames, frames_per_block=3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(prefix_attention(q, k, v, sizes, num_context), expected)


def test_kv_cache_bookkeeping(generator) -> None:
    cache = KVCache(num_layers=2)
    assert cache.is_empty and cache.num_tokens == 0 and cache.nbytes == 0 and cache.next_frame == 0
    keys = [torch.randn(1, 2, 6, 4, generator=generator) for _ in range(2)]
    positions = torch.tensor([[f, r, c] for f in (5, 6) for r in range(1) for c in range(3)])
    cache.append(keys, keys, positions, [CachedFrame(5, 1, 3), CachedFrame(6, 1, 3)])
    assert cache.num_tokens == 6 and cache.num_frames == 2 and cache.next_frame == 7
    assert cache.nbytes == 2 * 2 * keys[0].numel() * 4
    assert cache.frame_slices() == [slice(0, 3), slice(3, 6)]
    cache.select_frames([1])
    assert cache.frame_indices == [6]
    assert torch.equal(cache.layer(0)[0], keys[0][:, :, 3:])
    assert cache.frame_positions().tolist() == [6.0, 6.0, 6.0]
    with pytest.raises(ValueError, match="frames describe"):
        cache.append(keys, keys, positions[:2], [CachedFrame(7, 1, 3)])
    cache.reset()
    assert cache.is_empty and cache.keys == [None, None]


def test_write_cache_needs_a_cache(generator) -> None:
    model = WanDiT(tiny_config())
    x = torch.randn(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="needs a cache"):
        model(x, torch.rand(1), torch.randn(1, 2, 12), write_cache=True)
