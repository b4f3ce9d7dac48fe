"""The block rollout: the one loop that generates latent blocks with a KV cache, shared by the
streaming engine (`Session.step`), the DMD stage's rollout and its replay, and the evaluation.

Self Forcing (arXiv 2506.08009 Algorithm 2; CausVid arXiv 2412.07772 §3.3), as three visible
loops:

    for each block b:                                     # 1. blocks (autoregressive)
        x ~ N(0, I)
        for each time t_i before the exit step:           # 2. denoising (cache read-only)
            x0 = x - t_i v(x, t_i | cache)
            x  = (1 - t_{i+1}) x0 + t_{i+1} eps           #    re-noise with fresh noise
        x0 = x - t_exit v(x, t_exit | cache)              #    the block's output (autograd
                                                          #    on when training asks for it)
        write_block(policy, cache, x0, t = 0)             # 3. cache write of the clean block,
                                                          #    then policy.after_write

Inference exits at the last time: `num_steps + 1` DiT passes per block (5 for 4 steps).
Self Forcing's training rollout draws the exit step per block and keeps the graph of the exit
forward only (`grad=True`); RELIC's replayed back-propagation (arXiv 2512.04040 §4.4.2) re-runs
that one forward later with `denoise_step` on the cache rebuilt with `write_denoised`.

The caller owns positions: block b starts at latent frame `start_frame + b * frames_per_block`
whatever the memory policy does to the cache, and the model never evicts (STYLE §7). The cache
write always goes through the memory policy (`reverie.memory.write_block`: the policy's writer
and text, then `policy.after_write`), the one write path shared with `Session.observe`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from reverie.diffusion.samplers import fresh_noise
from reverie.diffusion.schedule import noisy_sample, x0_from_velocity
from reverie.memory.policy import MemoryPolicy
from reverie.memory.writing import write_block
from reverie.models.kv_cache import KVCache

Poses = tuple[torch.Tensor, torch.Tensor]
Span = tuple[int, int]  # latent frames [start, end)
ContextFn = Callable[[], contextlib.AbstractContextManager]


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


@dataclass(frozen=True)
class BlockInputs:
    """What one block is conditioned on besides its noise and the cache.

    Shapes:
        context: text states `(B, L, text_dim)` (denoising passes and, unless the policy
            writes with empty text, the cache write).
        empty_context: the empty prompt's states `(B, L', text_dim)`, needed by policies that
            write with empty text (MAG §3.3), else None.
        actions: `(B, T_video_b, 13)` for the block's video frames (`video_frame_range`), or
            None.
        poses: `(R (B, T_video_b, 3, 3), P (B, T_video_b, 3))` for the same frames, or None.
    """

    context: torch.Tensor
    empty_context: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    poses: Poses | None = None


@dataclass(frozen=True)
class BlockOutput:
    """One generated block.

    Attributes:
        latents: the exit step's x0-prediction `(B, fpb, C, h, w)`; with the graph of the exit
            forward when rolled out with `grad=True`.
        exit_step: index into the schedule's times of the forward that produced `latents`.
        exit_input: the noisy block fed to that forward, `(B, fpb, C, h, w)`, detached (what
            replaying the block needs, RELIC §4.4.2 step 1).
    """

    latents: torch.Tensor
    exit_step: int
    exit_input: torch.Tensor


def denoise_step(
    model: nn.Module,
    x: torch.Tensor,
    t: float,
    cache: KVCache,
    inputs: BlockInputs,
    start_frame: int,
    autocast: ContextFn = contextlib.nullcontext,
) -> torch.Tensor:
    """One read-only pass: the x0-prediction `x - t v(x, t | cache)` of a block.

    Args:
        model: a block-causal `WanDiT` (or its DDP/FSDP wrapper).
        x: the noisy block `(B, fpb, C, h, w)` at flow time `t` in [0, 1].
        cache: the KV cache it attends to (not modified).
        inputs: text, actions and poses of the block.
        start_frame: absolute latent index of the block's first frame.
        autocast: context around the forward (the trainer's bf16 autocast, or none).

    Shapes: returns `(B, fpb, C, h, w)` (float32 when `x` is float32 and `v` bf16).
    """
    t_batch = torch.full((x.shape[0],), t, device=x.device)  # (B,)
    with autocast():
        v = model(
            x,
            t_batch,
            inputs.context,
            actions=inputs.actions,
            poses=inputs.poses,
            cache=cache,
            frame_offset=start_frame,
        )  # (B, fpb, C, h, w)
    return x0_from_velocity(x, v, t)


@torch.no_grad()
def write_denoised(
    model: nn.Module,
    cache: KVCache,
    policy: MemoryPolicy,
    latents: torch.Tensor,
    inputs: BlockInputs,
    start_frame: int,
    *,
    context_noise: float = 0.0,
    generator: torch.Generator | None = None,
    autocast: ContextFn = contextlib.nullcontext,
) -> None:
    """Step 3: write a denoised block into the cache through the memory policy (no gradient).

    Args:
        latents: the clean block `(B, fpb, C, h, w)` (detached here).
        context_noise: flow time of the write pass (Self Forcing `context_noise`; 0: the clean
            block; > 0 re-noises it first with noise drawn from `generator`).
        others: as `denoise_step`; `model` is the generator, used unless the policy names its
            own writer (MAG's memory model, `policy.write_spec`).

    Raises:
        ValueError: from `write_block` (e.g. an empty-text policy without `empty_context`).
    """
    written = latents.detach()
    if context_noise > 0:
        written = noisy_sample(written, fresh_noise(written, generator), context_noise)
    with autocast():
        write_block(
            policy,
            cache,
            model,
            written,
            inputs.context,
            empty_context=inputs.empty_context,
            actions=inputs.actions,
            poses=inputs.poses,
            context_time=context_noise,
            frame_offset=start_frame,
        )


def denoise_block(
    model: nn.Module,
    cache: KVCache,
    inputs: BlockInputs,
    times: Sequence[float],
    like: torch.Tensor,
    span: Span,
    *,
    exit_step: int | None = None,
    grad: bool = False,
    generator: torch.Generator | None = None,
    autocast: ContextFn = contextlib.nullcontext,
) -> BlockOutput:
    """Denoise one block against the cache without writing it (loop 2 of the module docstring).

    The cache is only read, so the block can be dropped and denoised again (e.g. with other
    actions: `Session.propose`, the play server's speculative next block); `rollout_block` is
    this followed by `write_denoised`.

    Args: as `rollout_block` (no policy, no context noise: those belong to the write).

    Returns:
        the block's `BlockOutput`; `latents` is `(B, end - start, C, h, w)`.

    Raises:
        ValueError: `exit_step` outside `times`.
    """
    exit_step = len(times) - 1 if exit_step is None else exit_step
    if not 0 <= exit_step < len(times):
        raise ValueError(f"exit_step must be in [0, {len(times)}), got {exit_step}")
    start_frame, end_frame = span
    shape = (like.shape[0], end_frame - start_frame, *like.shape[2:])
    x = fresh_noise(like.new_empty(shape), generator)  # (B, n, C, h, w) at t = 1
    with torch.no_grad():  # denoising steps before the exit: no graph
        for i in range(exit_step):
            x0 = denoise_step(model, x, times[i], cache, inputs, start_frame, autocast)
            x = noisy_sample(x0, fresh_noise(x0, generator), times[i + 1])
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):  # the exit step
        x0 = denoise_step(model, x, times[exit_step], cache, inputs, start_frame, autocast)
    return BlockOutput(x0, exit_step, x.detach())


def rollout_block(
    model: nn.Module,
    cache: KVCache,
    policy: MemoryPolicy,
    inputs: BlockInputs,
    times: Sequence[float],
    like: torch.Tensor,
    span: Span,
    *,
    exit_step: int | None = None,
    grad: bool = False,
    context_noise: float = 0.0,
    generator: torch.Generator | None = None,
    autocast: ContextFn = contextlib.nullcontext,
) -> BlockOutput:
    """Generate one block and write it to the cache (loops 2 and 3 of the module docstring).

    Args:
        model: a block-causal `WanDiT` (or its wrapper) with `frames_per_block` latent frames
            per block.
        cache: its `KVCache`; holds one more block afterwards (as the policy leaves it).
        policy: the memory policy of the cache write.
        inputs: text, actions and poses of this block.
        times: the few-step flow times, descending (`FewStepSchedule.times`).
        like: any tensor `(B, n, C, h, w)` of the latents' batch, frame shape, dtype and device
            (the initial noise is drawn like it, `n` is ignored).
        span: absolute latent frames `[start, end)` of the block.
        exit_step: index into `times` of the forward whose x0-prediction is the block's output
            (Self Forcing's random exit); default the last (inference).
        grad: keep the graph of the exit forward (training); every earlier pass and the cache
            write run without gradient.
        context_noise: flow time of the cache-write pass (`write_denoised`).
        generator: source of all noise (initial, re-noising, context noise), on its device.
        autocast: context around the forwards.

    Returns:
        the block's `BlockOutput`.

    Raises:
        ValueError: `exit_step` outside `times`, and as `write_denoised`.
    """
    out = denoise_block(
        model,
        cache,
        inputs,
        times,
        like,
        span,
        exit_step=exit_step,
        grad=grad,
        generator=generator,
        autocast=autocast,
    )
    write_denoised(  # 3. cache write
        model,
        cache,
        policy,
        out.latents,
        inputs,
        span[0],
        context_noise=context_noise,
        generator=generator,
        autocast=autocast,
    )
    return out


def block_spans(start_frame: int, end_frame: int, frames_per_block: int) -> list[Span]:
    """Latent-frame ranges `[(start, end), ...]` covering `[start_frame, end_frame)` on the block
    grid of `frames_per_block` (the first range completes a partly filled block).

    E.g. `block_spans(1, 7, 3) == [(1, 3), (3, 6), (6, 7)]`.

    Raises:
        ValueError: unless `0 <= start_frame < end_frame` and `frames_per_block >= 1`.
    """
    if not 0 <= start_frame < end_frame or frames_per_block < 1:
        raise ValueError(
            f"need 0 <= start_frame ({start_frame}) < end_frame ({end_frame}) and "
            f"frames_per_block >= 1 ({frames_per_block})"
        )
    spans, start = [], start_frame
    while start < end_frame:
        end = min((start // frames_per_block + 1) * frames_per_block, end_frame)
        spans.append((start, end))
        start = end
    return spans


def rollout(
    model: nn.Module,
    cache: KVCache,
    policy: MemoryPolicy,
    blocks: Sequence[BlockInputs],
    spans: Sequence[Span],
    times: Sequence[float],
    like: torch.Tensor,
    *,
    exit_steps: Sequence[int] | None = None,
    grad: bool = False,
    context_noise: float = 0.0,
    generator: torch.Generator | None = None,
    autocast: ContextFn = contextlib.nullcontext,
) -> Iterator[BlockOutput]:
    """Generate the blocks `spans` autoregressively (loop 1); yields each once written.

    `blocks[b]` conditions the block `spans[b]` (e.g. `block_spans`); `exit_steps` gives one
    exit step per block (default: the last time for every block); the other arguments are
    `rollout_block`'s.

    Shapes:
        yields `BlockOutput`s with `latents (B, end - start, C, h, w)`.

    Raises:
        ValueError: `blocks`, `spans` or `exit_steps` of different lengths (when iteration
            starts: this is a generator), and as `rollout_block`.
    """
    if len(spans) != len(blocks) or (exit_steps is not None and len(exit_steps) != len(blocks)):
        raise ValueError(
            f"{len(blocks)} blocks need as many spans and exit steps, got {len(spans)} spans "
            f"and {'default' if exit_steps is None else len(exit_steps)} exit steps"
        )
    for b, (inputs, span) in enumerate(zip(blocks, spans, strict=True)):  # 1. blocks
        yield rollout_block(
            model,
            cache,
            policy,
            inputs,
            times,
            like,
            span,
            exit_step=None if exit_steps is None else exit_steps[b],
            grad=grad,
            context_noise=context_noise,
            generator=generator,
            autocast=autocast,
        )
