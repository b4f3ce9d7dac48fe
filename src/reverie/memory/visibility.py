"""What a memory policy's cache holds of the earlier latent frames, for each block (training).

Hybrid forcing on the memory's context (RELIC arXiv 2512.04040 §4.4.1: the student is trained
on "clean, spatially compressed memory latents", the context the streaming engine will give it)
needs, for every latent frame ``j`` of a training clip, what the policy's cache holds when
``j``'s block is generated: which earlier frames at full resolution, and which pooled, with the
averages their pooled tokens are. A teacher-forced forward applies this as an attention mask
over ``[clean | noisy | pooled clean]`` tokens (``WanDiT.forward(context=...)``,
``reverie.models.TeacherForcingContext``).

The layout is not re-derived from each policy's rules: it is read off the policy itself, by
streaming ``T`` latent frames block by block through its ``after_write`` on a bookkeeping cache
(one layer, one head, whose keys are one-hot token indicators, so that a pooled frame's keys
*are* its averaging matrix) and recording what is cached before each block. ``full``,
``window`` and ``mag`` (written by the generator) keep subsets of whole frames; ``relic`` pools
frames once when they leave its window. A policy that retrieves or offloads tokens
(``retrieval``), or pools one frame twice within the clip (``relic`` past its horizon), is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reverie.memory.policy import MemoryPolicy, WriteSpec
from reverie.models.attention import PooledContext
from reverie.models.kv_cache import CachedFrame, KVCache


@dataclass(frozen=True)
class ContextLayout:
    """What one policy's cache holds of the earlier frames of a ``T``-frame stream.

    Attributes:
        full: ``(T, T)`` bool, ``full[j, i]``: frame ``i`` is cached at full resolution while
            ``j``'s block is generated (False for ``j``'s own block and later frames).
        pooled: ``(T, T)`` bool, ``pooled[j, i]``: frame ``i`` is cached pooled then.
        pool: ``(T, n, S)`` float32: the pooled tokens of each frame as averages of its ``S``
            full-resolution tokens (``n`` = the most pooled tokens of any frame; rows past
            ``pool_tokens[i]`` are zero). Frames never pooled have no rows.
        pool_tokens: ``(T,)`` int64, pooled tokens of each frame (0: never pooled).
    """

    full: torch.Tensor
    pooled: torch.Tensor
    pool: torch.Tensor
    pool_tokens: torch.Tensor

    @property
    def has_pooling(self) -> bool:
        return bool(self.pooled.any())

    def pooled_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pooled token of the clip as an average over the clip's clean tokens.

        Shapes: returns ``pool (Np, T * S)`` float32 and ``frame (Np,)`` int64, the frame
        each pooled token averages (frame-major, as ``PooledContext.pool``).
        """
        num_frames, _, tpf = self.pool.shape
        frames = [i for i in range(num_frames) if self.pool_tokens[i] > 0]
        pool = torch.zeros(int(self.pool_tokens.sum()), num_frames * tpf)
        frame_of = torch.tensor(
            [i for i in frames for _ in range(int(self.pool_tokens[i]))], dtype=torch.int64
        )
        row = 0
        for i in frames:
            n = int(self.pool_tokens[i])
            pool[row : row + n, i * tpf : (i + 1) * tpf] = self.pool[i, :n]
            row += n
        return pool, frame_of

    def pooled_context(self) -> PooledContext:
        """The layout's pooled tokens as ``WanDiT.forward(pooled_context=...)`` takes them
        (``visible (T, Np)``: frame ``j`` sees the tokens of the frames ``pooled[j]`` marks)."""
        pool, frame_of = self.pooled_tokens()
        return PooledContext(pool, self.pooled[:, frame_of])


def _check_simulable(policy: MemoryPolicy, num_frames: int, frames_per_block: int) -> None:
    if num_frames < 1 or frames_per_block < 1 or num_frames % frames_per_block:
        raise ValueError(
            f"{num_frames} latent frames do not split into blocks of {frames_per_block}"
        )
    if policy.write_spec != WriteSpec():
        raise ValueError(
            f"memory policy {policy.name!r} writes its cache with another model or the empty "
            "prompt; only caches the generator writes with the caption can be trained on"
        )


def context_layout(
    policy: MemoryPolicy,
    num_frames: int,
    frames_per_block: int,
    token_grid: tuple[int, int] = (1, 1),
) -> ContextLayout:
    """Read off ``policy`` what its cache holds of each earlier frame, before each block of a
    ``num_frames`` stream of latent frames with ``token_grid`` (rows, columns) tokens each.

    The policy is ``reset`` before and after.

    Raises:
        ValueError: ``num_frames`` is not a positive multiple of ``frames_per_block``; the
            policy writes with another model or the empty prompt (``WriteSpec``), whose cache
            a generator's teacher-forced pass does not reproduce; it keeps tokens that are not
            the frames' own or their averages (retrieval, offloading), or pools a frame twice.
    """
    _check_simulable(policy, num_frames, frames_per_block)
    rows, cols = token_grid
    tpf = rows * cols
    full = torch.zeros(num_frames, num_frames, dtype=torch.bool)
    pooled = torch.zeros_like(full)
    pools: dict[int, torch.Tensor] = {}  # frame -> (n_i, S) averaging matrix
    cache = KVCache(1)
    one_hot = torch.eye(tpf)  # token t of a frame has key e_t
    policy.reset()
    try:
        for start in range(0, num_frames, frames_per_block):
            keys = cache.keys[0]
            for frame, span in zip(cache.frames, cache.frame_slices(), strict=True):
                if (frame.height, frame.width) == (rows, cols):
                    full[start : start + frames_per_block, frame.index] = True
                    continue
                matrix = keys[0, 0, span].float().clone()  # (n_i, S), not a view
                seen = pools.setdefault(frame.index, matrix)
                if seen.shape != matrix.shape or not torch.allclose(seen, matrix, atol=1e-6):
                    raise ValueError(
                        f"memory policy {policy.name!r} pools latent frame {frame.index} twice "
                        f"within {num_frames} frames; train on shorter clips"
                    )
                pooled[start : start + frames_per_block, frame.index] = True
            n = frames_per_block * tpf
            key = one_hot.repeat(frames_per_block, 1)[None, None]  # (1, 1, n, S)
            frame_of = torch.arange(start, start + frames_per_block).repeat_interleave(tpf)
            cell = torch.arange(n) % tpf
            positions = torch.stack([frame_of, cell // cols, cell % cols], 1).float()  # (n, 3)
            frames = [CachedFrame(start + f, rows, cols) for f in range(frames_per_block)]
            cache.append([key], [key], positions, frames)
            policy.after_write(cache, torch.zeros(1, frames_per_block, 1, 1, 1))
            indices = cache.frame_indices
            if len(set(indices)) != len(indices) or policy.num_tokens(cache) != cache.num_tokens:
                raise ValueError(
                    f"memory policy {policy.name!r} keeps retrieved or offloaded tokens, not "
                    "its frames or their averages; its context cannot be written as a mask"
                )
    except (TypeError, AttributeError, RuntimeError) as e:
        raise ValueError(
            f"memory policy {policy.name!r} cannot be simulated on a bookkeeping cache: {e}"
        ) from e
    finally:
        policy.reset()
    pool_tokens = torch.zeros(num_frames, dtype=torch.int64)
    width = max((m.shape[0] for m in pools.values()), default=0)
    pool = torch.zeros(num_frames, width, tpf)
    for i, matrix in pools.items():
        pool_tokens[i] = matrix.shape[0]
        pool[i, : matrix.shape[0]] = matrix
    return ContextLayout(full, pooled, pool, pool_tokens)


def context_visibility(
    policy: MemoryPolicy,
    num_frames: int,
    frames_per_block: int,
    token_grid: tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """The earlier frames ``policy`` keeps whole, for a policy that keeps only whole frames
    (``full``, ``window``, ``mag``): ``context_layout(...).full``.

    Shapes: returns ``(T, T)`` bool.

    Raises:
        ValueError: as ``context_layout``, and for a policy that pools frames (``relic``).
    """
    layout = context_layout(policy, num_frames, frames_per_block, token_grid)
    if layout.has_pooling:
        raise ValueError(
            f"memory policy {policy.name!r} pools frames, not a subset of whole frames; use "
            "context_layout"
        )
    return layout.full
