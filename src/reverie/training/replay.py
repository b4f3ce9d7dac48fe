"""Self-Forcing rollouts of the block-causal student and RELIC's replayed back-propagation.

Self Forcing (arXiv 2506.08009 §3, Algorithm 1) trains the few-step student on its own
autoregressive rollout: the engine's block rollout (`reverie.diffusion.rollout`, the one block
loop of inference and training) from a cache holding the clean prefix, with a random exit step:

    write the clean prefix (the first latent frame) into the cache          (no_grad)
    for each block l:                                                       # 1. blocks
        x ~ N(0, I)
        for the denoising steps before the rollout's random exit step:      # 2. no graph
            x0 = x - t v(x, t | cache);  x = (1 - t') x0 + t' eps
        x0_l = x - t_exit v(x, t_exit | cache)      the block's output: the only graded forward
        write x0_l.detach() into the cache, then policy.after_write(...)     # 3. no_grad

The cache (the earlier blocks' K/V) is refreshed under `no_grad` from detached blocks, so block
l's output depends on the parameters only through its own exit forward, with its exit input and
its cache as constants.

RELIC §4.4.2 (replayed back-propagation) holds one block's graph at a time instead of the whole
rollout's (what remains is the KV cache, whose size the memory policy bounds):

    (1) x̂ = stopgrad(G(ε))          `ARStudent.rollout(grad=False)`; per block it records the
                                      exit step and the noisy exit input (`BlockRecord`)
    (2) Δŝ = s_data(x̂) - s_gen(x̂)   `score_fn`: teacher (CFG) and critic on the whole sequence
    (3) for each block l:            `ARStudent.replay`: rebuild the cache of blocks < l by
                                      re-running their write passes on x̂ (no_grad), re-run the
                                      exit forward with autograd on, `x_l.backward(-Δŝ_l)` (the
                                      normalised DMD gradient of objectives/dmd.py), free it
    (4) one optimizer step           the trainer, after `Stage.forward_backward`

`naive_dmd_loss` is the single-graph variant (Self Forcing's implementation): the graded
rollout, then `dmd_loss` over the whole sequence, then one `backward`. Both give the same
generator gradient: the naive loss `0.5 mean((x - sg(x - g))^2)` has `dL/dx_l = g_l / numel`,
so `dL/dθ = Σ_l (g_l / numel) · ∂x_l/∂θ` with each `x_l = G_θ(exit input_l | cache_<l)` and the
exit input and cache constants; the replay evaluates each term with the same exit input
(recorded), the same cache (the same write passes and memory policy on the same x̂) and the
same `g` (computed once from x̂), and autograd sums the terms into `.grad`. Only the
floating-point summation order differs (tests/training/test_replay.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reverie.diffusion import (
    BlockInputs,
    FewStepSchedule,
    block_spans,
    denoise_step,
    rollout,
    video_frame_range,
    write_denoised,
)
from reverie.memory import MemoryPolicy
from reverie.models import KVCache, WanDiTConfig
from reverie.objectives import dmd_gradient, dmd_loss
from reverie.training.distributed import unwrap

ContextFn = Callable[[], contextlib.AbstractContextManager]
NoSyncFn = Callable[[bool], contextlib.AbstractContextManager]
Span = tuple[int, int]  # latent frames [start, end)
# x̂ (B, n, C, h, w) generated latents -> (real_x0, fake_x0), each (B, n, C, h, w).
ScoreFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Conditioning:
    """Everything a student rollout is conditioned on besides its noise.

    Shapes:
        prefix: clean latent frames given as context, `(B, P, C, h, w)` (P = 1: the first
            frame, image-to-video); the rollout generates latent frames `[P, N)`.
        context: the student's text states `(B, L, text_dim)` (denoising and cache writes;
            the empty prompt for a fraction of samples, MAG §3.2).
        empty_context: the empty prompt's states `(B, L', text_dim)`, used by memory policies
            that write the cache with empty text (MAG §3.3), or None.
        actions: `(B, T_video, 13)` per video frame with `T_video >= 1 + 4 (N - 1)`, or None.
        poses: `(R (B, T_video, 3, 3), P (B, T_video, 3))`, or None.
    """

    prefix: torch.Tensor
    context: torch.Tensor
    empty_context: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    poses: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def prefix_frames(self) -> int:
        """P, the number of clean latent frames before the generated ones."""
        return self.prefix.shape[1]

    def frames(self, start: int, end: int, stride: int) -> dict[str, Any]:
        """`actions=`/`poses=` keyword arguments of `WanDiT.forward` for latent frames
        `[start, end)` (`video_frame_range` with the VAE's temporal `stride`)."""
        video = video_frame_range(start, end, stride)
        actions = None if self.actions is None else self.actions[:, video]
        poses = None if self.poses is None else (self.poses[0][:, video], self.poses[1][:, video])
        return {"actions": actions, "poses": poses}


@dataclass(frozen=True)
class BlockRecord:
    """What replaying one block needs (RELIC §4.4.2 step 1).

    Attributes:
        start, end: absolute latent frames `[start, end)` of the block.
        exit_step: index into the schedule's times of the graded forward (Self Forcing's exit).
        exit_input: the noisy block fed to that forward, `(B, end - start, C, h, w)`, detached.
    """

    start: int
    end: int
    exit_step: int
    exit_input: torch.Tensor


@dataclass(frozen=True)
class Rollout:
    """A student rollout.

    Attributes:
        latents: generated latent frames `[P, N)`, `(B, N - P, C, h, w)`; with the graph of
            every block's exit forward when rolled out with `grad=True`, else detached.
        blocks: one `BlockRecord` per block, in order.
    """

    latents: torch.Tensor
    blocks: list[BlockRecord]


def rollout_chunks(num_frames: int, prefix_frames: int, frames_per_block: int) -> list[Span]:
    """Latent-frame ranges `[(start, end), ...]` generated after a clean prefix, aligned to the
    block grid of `frames_per_block` (`block_spans(prefix_frames, num_frames, ...)`: the first
    range completes the prefix's block).

    E.g. `rollout_chunks(7, 1, 3) == [(1, 3), (3, 6), (6, 7)]`.

    Raises:
        ValueError: unless `0 < prefix_frames < num_frames` and `frames_per_block >= 1`.
    """
    if not 0 < prefix_frames < num_frames or frames_per_block < 1:
        raise ValueError(
            f"need 0 < prefix_frames ({prefix_frames}) < num_frames ({num_frames}) and "
            f"frames_per_block >= 1 ({frames_per_block})"
        )
    return block_spans(prefix_frames, num_frames, frames_per_block)


@dataclass
class ARStudent:
    """The block-causal few-step generator as the trainer rolls it out, through the engine's
    block rollout (`reverie.diffusion.rollout`).

    Attributes:
        model: the student `WanDiT` (or its DDP/FSDP wrapper), called with `WanDiT.forward`'s
            signature.
        config: its `WanDiTConfig` (block size, layers, VAE temporal stride).
        schedule: the few-step times (Self Forcing: 1, .9375, .8333, .625).
        policy: the memory policy applied after every cache write (`reverie.memory`).
        autocast: context for the forward passes (the trainer's bf16 autocast, or none).
    """

    model: nn.Module
    config: WanDiTConfig
    schedule: FewStepSchedule
    policy: MemoryPolicy
    autocast: ContextFn = field(default=contextlib.nullcontext)

    def chunks(self, num_frames: int, prefix_frames: int) -> list[Span]:
        """`rollout_chunks` with the model's block size."""
        return rollout_chunks(num_frames, prefix_frames, self.config.attention.frames_per_block)

    def _inputs(self, cond: Conditioning, start: int, end: int) -> BlockInputs:
        """The rollout's `BlockInputs` of latent frames `[start, end)`."""
        frames = cond.frames(start, end, self.config.vae_temporal_stride)
        return BlockInputs(cond.context, cond.empty_context, frames["actions"], frames["poses"])

    def _write(self, cache: KVCache, cond: Conditioning, block, start: int, end: int) -> None:
        """Cache-write pass of a clean block `(B, n, C, h, w)` at t = 0, then the policy."""
        if cache.next_frame != start:
            raise RuntimeError(
                f"memory policy {self.policy.name!r} left the cache ending at latent frame "
                f"{cache.next_frame}, but block [{start}, {end}) is next"
            )
        inputs = self._inputs(cond, start, end)
        write_denoised(self.model, cache, self.policy, block, inputs, start, autocast=self.autocast)

    def _start(self, cond: Conditioning) -> KVCache:
        """A fresh cache holding the clean prefix (and a reset policy)."""
        self.policy.reset()
        cache = unwrap(self.model).new_cache()
        self._write(cache, cond, cond.prefix, 0, cond.prefix_frames)
        return cache

    def rollout(
        self,
        cond: Conditioning,
        num_frames: int,
        exit_steps: Sequence[int],
        *,
        grad: bool,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Self Forcing's training rollout of latent frames `[P, num_frames)`
        (`reverie.diffusion.rollout` from a cache holding the prefix).

        Args:
            cond: the conditioning (prefix, text, actions, poses).
            num_frames: N, total latent frames including the prefix.
            exit_steps: per block (`len(self.chunks(N, P))`), the schedule index whose
                x0-prediction is the block's output (Self Forcing draws one per rollout).
            grad: keep the graph of every exit forward (the naive variant); False is RELIC's
                step (1), `x̂ = stopgrad(G(ε))`.
            generator: source of all noise (initial and re-noising), on its own device.

        Shapes:
            returns `Rollout.latents (B, N - P, C, h, w)` in the prefix's dtype.

        Raises:
            ValueError: wrong number of exit steps, or an exit step outside the schedule.
            RuntimeError: a memory policy that dropped the newest frame.
        """
        spans = self.chunks(num_frames, cond.prefix_frames)
        times = self.schedule.times
        if len(exit_steps) != len(spans) or not all(0 <= e < len(times) for e in exit_steps):
            raise ValueError(
                f"need {len(spans)} exit steps in [0, {len(times)}), got {list(exit_steps)}"
            )
        cache = self._start(cond)
        blocks = [self._inputs(cond, start, end) for start, end in spans]
        outputs = list(
            rollout(
                self.model,
                cache,
                self.policy,
                blocks,
                spans,
                times,
                cond.prefix,
                exit_steps=exit_steps,
                grad=grad,
                generator=generator,
                autocast=self.autocast,
            )
        )
        records = [
            BlockRecord(start, end, out.exit_step, out.exit_input)
            for (start, end), out in zip(spans, outputs, strict=True)
        ]
        return Rollout(torch.cat([out.latents for out in outputs], dim=1), records)

    def replay(
        self,
        cond: Conditioning,
        rollout: Rollout,
        gradient: torch.Tensor,
        *,
        no_sync: NoSyncFn | None = None,
    ) -> None:
        """RELIC §4.4.2 step (3): back-propagate `gradient` block by block into the parameters.

        For each recorded block: re-run its exit forward (`denoise_step`) with autograd on, on
        the cache rebuilt from the blocks before it (their write passes, `write_denoised`,
        re-run on `rollout.latents` with the same memory policy, as Self Forcing refreshes its
        KV cache), call `x_l.backward(gradient_l)` and drop the block's graph before the next
        one. Gradients accumulate into `.grad`; no optimizer step is taken.

        Args:
            cond: the conditioning of the rollout.
            rollout: from `rollout(..., grad=False)`.
            gradient: dL/dx̂ `(B, N - P, C, h, w)` (e.g. the DMD gradient / numel, times the
                accumulation scale).
            no_sync: `DistContext.no_sync`; every block but the last runs inside
                `no_sync(True)` so DDP/FSDP reduce the accumulated gradient once.

        Raises:
            ValueError: `gradient` does not match `rollout.latents`.
        """
        if gradient.shape != rollout.latents.shape:
            raise ValueError(
                f"gradient {tuple(gradient.shape)} != latents {tuple(rollout.latents.shape)}"
            )
        no_sync = (lambda _: contextlib.nullcontext()) if no_sync is None else no_sync
        prefix, times = cond.prefix_frames, self.schedule.times
        cache = self._start(cond)
        last = len(rollout.blocks) - 1
        for index, block in enumerate(rollout.blocks):
            a, b = block.start - prefix, block.end - prefix  # columns of the generated frames
            inputs = self._inputs(cond, block.start, block.end)
            with no_sync(index < last), torch.enable_grad():
                t = times[block.exit_step]
                x0 = denoise_step(
                    self.model, block.exit_input, t, cache, inputs, block.start, self.autocast
                )
                x0.backward(gradient=gradient[:, a:b].to(x0.dtype))
            del x0  # the block's graph is freed here
            self._write(cache, cond, rollout.latents[:, a:b], block.start, block.end)


@dataclass(frozen=True)
class DMDStepResult:
    """The generator update's outcome: `loss` (float32 scalar, the value of `dmd_loss`,
    `0.5 mean(g^2)`) and the generated latents `(B, N - P, C, h, w)` (detached)."""

    loss: torch.Tensor
    latents: torch.Tensor


def replayed_dmd_backward(
    student: ARStudent,
    cond: Conditioning,
    num_frames: int,
    exit_steps: Sequence[int],
    score_fn: ScoreFn,
    *,
    scale: float = 1.0,
    no_sync: NoSyncFn | None = None,
    generator: torch.Generator | None = None,
) -> DMDStepResult:
    """One generator update's backward with replayed back-propagation (RELIC §4.4.2 (1)-(3)).

    (1) roll out with autograd off; (2) `real, fake = score_fn(x̂)` on the whole sequence and
    the normalised DMD gradient `g = dmd_gradient(x̂, real, fake)` (DMD arXiv 2311.18828 eq. 7,
    `g ∝ -Δŝ`); (3) replay block by block back-propagating `scale * g / g.numel()`, which is
    exactly the gradient of `scale * dmd_loss` on the whole sequence. (4) is the caller's
    optimizer step.

    Shapes: cond as in `Conditioning`; `num_frames` N includes the prefix.
    Raises: as `ARStudent.rollout` / `dmd_gradient`.
    """
    rollout = student.rollout(cond, num_frames, exit_steps, grad=False, generator=generator)
    real_x0, fake_x0 = score_fn(rollout.latents)
    grad = dmd_gradient(rollout.latents, real_x0, fake_x0)  # (B, n, C, h, w) float32
    student.replay(cond, rollout, grad * (scale / grad.numel()), no_sync=no_sync)
    return DMDStepResult(0.5 * grad.square().mean(), rollout.latents)


def naive_dmd_loss(
    student: ARStudent,
    cond: Conditioning,
    num_frames: int,
    exit_steps: Sequence[int],
    score_fn: ScoreFn,
    *,
    generator: torch.Generator | None = None,
) -> DMDStepResult:
    """The single-graph variant: graded rollout, then `dmd_loss` over the whole sequence.

    The returned `loss` keeps the graph of every block's exit forward (memory grows with the
    rollout); the caller back-propagates it. Same arguments and gradient as
    `replayed_dmd_backward`.
    """
    rollout = student.rollout(cond, num_frames, exit_steps, grad=True, generator=generator)
    real_x0, fake_x0 = score_fn(rollout.latents.detach())
    return DMDStepResult(dmd_loss(rollout.latents, real_x0, fake_x0), rollout.latents.detach())
