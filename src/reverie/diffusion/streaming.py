"""Block-causal streaming generation with a KV cache (Self Forcing / CausVid inference).

Self Forcing (arXiv 2506.08009 Algorithm 2; CausVid arXiv 2412.07772 §3.3), as three visible
loops:

    for each block b:                                     # 1. blocks (autoregressive)
        x ~ N(0, I)
        for each time t_i of the few-step schedule:       # 2. denoising (cache read-only)
            x0 = x - t_i v(x, t_i | cache)
            x  = (1 - t_{i+1}) x0 + t_{i+1} eps           #    re-noise with fresh noise
        writer(x0, t = 0 | cache, write_cache=True)       # 3. cache write on the clean block
        after_block(cache, b, x0)                         #    memory policy hook (optional)

That is `num_steps + 1` DiT passes per block (5 for 4 steps). The engine owns positions: block
b starts at latent frame `start_frame + b * frames_per_block` whatever the memory policy does to
the cache, and the model never evicts (STYLE §7). Run under `torch.no_grad()` for inference.

A `reverie.memory` policy plugs in through the write-pass arguments and the hook:
`writer=policy.write_spec.model`, `write_context=<empty-prompt states>` if
`policy.write_spec.empty_text`, `after_block=lambda cache, b, x0: policy.after_write(cache, x0)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from reverie.diffusion.samplers import fresh_noise
from reverie.diffusion.schedule import FewStepSchedule, noisy_sample, x0_from_velocity
from reverie.memory.policy import MemoryPolicy
from reverie.memory.writing import write_block
from reverie.models import KVCache, WanDiT

# After each block's cache write: (cache, block index, clean block (B, fpb, C, h, w)) -> None,
# e.g. a `reverie.memory` policy's `after_write`.
AfterBlockFn = Callable[[KVCache, int, torch.Tensor], None]
Poses = tuple[torch.Tensor, torch.Tensor]


def video_frame_range(start: int, end: int, temporal_factor: int = 4) -> slice:
    """Video frames encoded by latent frames `[start, end)`: frame 0 alone, then groups of 4.

    E.g. latents [0, 3) -> video [0, 9); latents [3, 6) -> video [9, 21).
    """
    first = 0 if start == 0 else 1 + temporal_factor * (start - 1)
    return slice(first, 1 + temporal_factor * (end - 1))


def split_per_block(
    video_conditioning: torch.Tensor,
    num_blocks: int,
    frames_per_block: int,
    temporal_factor: int = 4,
) -> list[torch.Tensor]:
    """Split per-video-frame conditioning (actions, or R or P of poses) into per-block chunks
    as `WanDiT.forward` expects them for a chunk (`video_frame_range`).

    Shapes:
        video_conditioning: `(B, T_video, ...)` with `T_video = 1 + 4 (num_blocks * fpb - 1)`.
        returns `num_blocks` tensors `(B, T_video_b, ...)` (first block `1 + 4 (fpb - 1)`
        frames, later blocks `4 fpb`), views of the input.

    Raises:
        ValueError: if `T_video` does not match.
    """
    num_latents = num_blocks * frames_per_block
    expected = 1 + temporal_factor * (num_latents - 1)
    if video_conditioning.shape[1] != expected:
        raise ValueError(
            f"{num_blocks} blocks of {frames_per_block} latent frames need {expected} video "
            f"frames of conditioning, got {video_conditioning.shape[1]}"
        )
    return [
        video_conditioning[:, video_frame_range(b * frames_per_block, (b + 1) * frames_per_block)]
        for b in range(num_blocks)
    ]


def stream_blocks(
    model: WanDiT,
    cache: KVCache,
    context: torch.Tensor,
    *,
    num_blocks: int,
    latent_size: tuple[int, int],
    schedule: FewStepSchedule | None = None,
    generator: torch.Generator | None = None,
    actions: Sequence[torch.Tensor] | None = None,
    poses: Sequence[Poses] | None = None,
    start_frame: int | None = None,
    writer: Callable[..., torch.Tensor] | None = None,
    write_context: torch.Tensor | None = None,
    context_noise: float = 0.0,
    after_block: AfterBlockFn | None = None,
    policy: MemoryPolicy | None = None,
    empty_context: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Generate blocks of latent frames autoregressively; yields each clean block when done.

    Args:
        model: a block-causal `WanDiT` (`frames_per_block` latent frames per block).
        cache: its `KVCache` (`model.new_cache()`, or one holding earlier context); grows by one
            block per block unless `after_block` evicts.
        context: text states `(B, L, text_dim)` for the denoising passes.
        num_blocks: blocks to generate.
        latent_size: `(h, w)` latent pixels per frame (64x64 video with the Wan VAE: 8x8).
        schedule: few-step times (default Self Forcing's 4 steps, shift 5).
        generator: source of all noise (initial and re-noising), on its own device.
        actions: per block `(B, T_video_b, 13)` (see `split_per_block`), or None.
        poses: per block `(R (B, T_video_b, 3, 3), P (B, T_video_b, 3))`, or None.
        start_frame: absolute latent index of the first block (default `cache.next_frame`).
        writer: the model that runs the cache-write pass (default `model`; MAG §3.3 uses a
            separate memory model of the same architecture).
        write_context: text states for the cache-write pass (default `context`; MAG's memory
            write uses the empty prompt, MAG §3.3).
        context_noise: flow time of the cache-write pass (Self Forcing `context_noise`, default
            0: the clean block; > 0 re-noises the clean block before writing).
        after_block: `after_block(cache, block_index, clean_block)` after each cache write
            (memory policies: evict, pool, retrieve).
        policy: a `reverie.memory` policy: the cache write then goes through
            `reverie.memory.write_block` (the policy's writer and text, then
            `policy.after_write`), the one write path shared with `Session.observe`;
            `writer`/`write_context` must then be left None.
        empty_context: the empty prompt's states `(B, L', text_dim)`, needed when `policy`
            writes with empty text (MAG §3.3).

    Shapes:
        yields `(B, frames_per_block, C, h, w)` clean latents per block, in the model's dtype.

    Raises:
        ValueError: on per-block conditioning of the wrong length (raised when iteration
            starts, as this is a generator), and whatever `WanDiT.forward` raises.
    """
    schedule = FewStepSchedule() if schedule is None else schedule
    times = schedule.times
    frames_per_block = model.config.attention.frames_per_block
    parameter = next(model.parameters())
    batch = context.shape[0]
    shape = (batch, frames_per_block, model.config.in_channels, *latent_size)
    template = torch.empty(shape, dtype=parameter.dtype, device=parameter.device)
    if policy is not None and (writer is not None or write_context is not None):
        raise ValueError("pass either policy or writer/write_context, not both")
    writer = model if writer is None else writer
    write_context = context if write_context is None else write_context
    for name, per_block in (("actions", actions), ("poses", poses)):
        if per_block is not None and len(per_block) != num_blocks:
            raise ValueError(f"{name} has {len(per_block)} blocks, expected {num_blocks}")
    frame = cache.next_frame if start_frame is None else start_frame

    for b in range(num_blocks):  # 1. blocks
        conditioning = dict(
            actions=None if actions is None else actions[b],
            poses=None if poses is None else poses[b],
            cache=cache,
            frame_offset=frame,
        )
        x = fresh_noise(template, generator)  # (B, fpb, C, h, w) at t = 1
        for i, t in enumerate(times):  # 2. denoising steps, cache read-only
            t_batch = torch.full((batch,), t, device=x.device)  # (B,)
            v = model(x, t_batch, context, **conditioning)  # (B, fpb, C, h, w)
            x0 = x0_from_velocity(x, v, t)
            if i + 1 < len(times):
                x = noisy_sample(x0, fresh_noise(x0, generator), times[i + 1])
        # 3. cache write: one pass on the clean (or context-noised) block at t = context_noise
        written = x0
        if context_noise > 0:
            written = noisy_sample(x0, fresh_noise(x0, generator), context_noise)
        if policy is not None:
            write_block(
                policy,
                cache,
                model,
                written,
                context,
                empty_context=empty_context,
                actions=conditioning["actions"],
                poses=conditioning["poses"],
                context_time=context_noise,
                frame_offset=frame,
            )
        else:
            t_write = torch.full((batch,), context_noise, device=x0.device)  # (B,)
            writer(written, t_write, write_context, write_cache=True, **conditioning)
        if after_block is not None:
            after_block(cache, b, x0)
        frame += frames_per_block
        yield x0


def generate_blocks(model: WanDiT, cache: KVCache, context: torch.Tensor, **kwargs) -> torch.Tensor:
    """Run `stream_blocks` to the end and concatenate the blocks (same arguments).

    Shapes: returns latents `(B, num_blocks * frames_per_block, C, h, w)`.
    """
    return torch.cat(list(stream_blocks(model, cache, context, **kwargs)), dim=1)
