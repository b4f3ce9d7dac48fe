"""Helpers shared by the memory tests (imported by the test modules): a tiny block-causal
model, a Self Forcing-style streaming loop, and synthetic cache writes for bookkeeping tests."""

from __future__ import annotations

import torch

from reverie.memory import FrameTokens, MemoryPolicy, split_frames, write_block
from reverie.models import (
    AttentionConfig,
    AttentionMode,
    CachedFrame,
    KVCache,
    WanDiT,
    WanDiTConfig,
)
from reverie.models.rope import grid_positions

CHANNELS, HEIGHT, WIDTH = 4, 8, 8  # latent frame; patch (1, 2, 2) -> 4x4 = 16 tokens
GRID = (HEIGHT // 2, WIDTH // 2)
TEXT_DIM, TEXT_LEN = 12, 5
LAYERS, HEADS, HEAD_DIM = 2, 2, 8
# Small settings under which every policy hits its limits within a few dozen frames.
SMALL_CONFIGS: dict[str, dict] = {
    "window": dict(window_frames=4, sink_frames=2),
    "relic": dict(window_frames=3),
    "mag": dict(max_frames=6, sink_frames=1),
    "retrieval": dict(sink_frames=1, window_frames=3, top_k=2, exclude_recent=2),
}
# Block sizes of a synthetic stream: the image frame alone, then blocks of 3 (Self Forcing).
BLOCKS = [1] + [3] * 19


def tiny_model(frames_per_block: int = 3, seed: int = 0) -> WanDiT:
    """A 2-layer block-causal WanDiT for 8x8x4 latents (no action/pose encoders)."""
    config = WanDiTConfig(
        dim=HEADS * HEAD_DIM,
        ffn_dim=32,
        num_heads=HEADS,
        num_layers=LAYERS,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        actions=None,
        poses=None,
        attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=frames_per_block),
    )
    torch.manual_seed(seed)
    model = WanDiT(config).eval()
    with torch.no_grad():
        model.head.head.weight.normal_()  # Wan zero-inits the head; make outputs informative
    return model


def stream(
    model: WanDiT,
    policy: MemoryPolicy | None,
    num_frames: int,
    frames_per_block: int,
    generator: torch.Generator,
    times: tuple[float, ...] = (1.0, 0.5),
) -> tuple[torch.Tensor, KVCache]:
    """Self Forcing-style streaming: per block, denoising passes at `times` on the cache,
    then the clean block is written (`write_block` with `policy`, or the model's plain cached
    write when `policy` is None). Returns the clean latents `(1, num_frames, C, H, W)`."""
    context = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=generator)
    empty = torch.zeros(1, TEXT_LEN, TEXT_DIM)
    cache, blocks = model.new_cache(), []
    with torch.no_grad():
        for start in range(0, num_frames, frames_per_block):
            size = min(frames_per_block, num_frames - start)
            noise = torch.randn(1, size, CHANNELS, HEIGHT, WIDTH, generator=generator)
            x = noise
            for i, t in enumerate(times):  # flow: x_t = (1 - t) x0 + t noise, v = noise - x0
                velocity = model(x, torch.full((1,), t), context, cache=cache)
                x0 = x - t * velocity
                t_next = times[i + 1] if i + 1 < len(times) else 0.0
                x = (1 - t_next) * x0 + t_next * noise
            if policy is None:
                model(x0, torch.zeros(1), context, cache=cache, write_cache=True)
            else:
                write_block(policy, cache, model, x0, context, empty_context=empty)
            blocks.append(x0)
    return torch.cat(blocks, dim=1), cache


def synthetic_write(
    cache: KVCache, num_frames: int, generator: torch.Generator, grid: tuple[int, int] = GRID
) -> torch.Tensor:
    """Append `num_frames` frames of random K/V at `cache.next_frame` (what a write pass
    does), return matching random clean latents `(1, T, C, H, W)`."""
    h, w = grid
    n = num_frames * h * w
    keys = [torch.randn(1, HEADS, n, HEAD_DIM, generator=generator) for _ in range(LAYERS)]
    values = [torch.randn(1, HEADS, n, HEAD_DIM, generator=generator) for _ in range(LAYERS)]
    start = cache.next_frame
    positions = grid_positions(num_frames, h, w, start)
    frames = [CachedFrame(start + i, h, w) for i in range(num_frames)]
    cache.append(keys, values, positions, frames)
    return torch.randn(1, num_frames, CHANNELS, HEIGHT, WIDTH, generator=generator)


def snapshot(cache: KVCache, num_new: int) -> dict[int, FrameTokens]:
    """Copies of the last `num_new` frames' tokens, keyed by frame index."""
    slots = range(cache.num_frames - num_new, cache.num_frames)
    return {p.frame.index: p.to("cpu") for p in split_frames(cache, slots)}
