"""Wan2.1 self- and cross-attention, with bidirectional, block-causal and KV-cached modes.

One attention serves every mode (STYLE §5): the model describes *which* keys each query block may
see with a list of query-block sizes, and passes previously cached keys/values explicitly. The
attention never decides what is in the cache (policies live outside; see `kv_cache.py`).

Block-causal attention (CausVid arXiv 2412.07772 §3.1, Self Forcing arXiv 2506.08009 §3): latent
frames are grouped into blocks of `frames_per_block`; a token attends to every token of its own
block and of earlier blocks. We compute it as one `F.scaled_dot_product_attention` call per query
block over a key *prefix* (no O(N^2) mask tensor, so fused kernels stay usable); `block_causal_mask`
is the equivalent boolean mask, used as the reference in tests.

Teacher forcing (`teacher_forcing_mask`, CausVid arXiv 2412.07772 §3.2; Self Forcing arXiv
2506.08009 §3.1 "TF"): one forward over `[clean frames | noisy frames]`, where noisy block `j`
sees the clean blocks before it and itself, so every block is trained in the condition the
streaming engine generates it in (clean cached context, its own noisy latents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from reverie.models.rope import apply_rotary


class AttentionMode(StrEnum):
    """How video tokens attend to each other."""

    BIDIRECTIONAL = "bidirectional"
    BLOCK_CAUSAL = "block_causal"


@dataclass(frozen=True)
class AttentionConfig:
    """Self-attention pattern.

    Attributes:
        mode: `bidirectional` (Wan, the teacher) or `block_causal` (the AR student).
        frames_per_block: latent frames per causal block (Self Forcing uses 3); a block is also
            the unit the streaming engine generates and writes to the KV cache.
    """

    mode: AttentionMode = AttentionMode.BIDIRECTIONAL
    frames_per_block: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.mode, AttentionMode):
            raise TypeError(f"attention mode must be an AttentionMode, got {self.mode!r}")
        if self.frames_per_block < 1:
            raise ValueError(f"frames_per_block must be >= 1, got {self.frames_per_block}")


def query_block_sizes(
    config: AttentionConfig, num_frames: int, frame_offset: int, tokens_per_frame: int
) -> list[int]:
    """Token counts of the consecutive query blocks of a chunk of frames.

    Bidirectional: one block (every query sees every key). Block-causal: frames are grouped by
    their absolute block index `(frame_offset + i) // frames_per_block`, so a chunk may start
    in the middle of a block. Pure host arithmetic (no device sync).
    """
    if config.mode is AttentionMode.BIDIRECTIONAL:
        return [num_frames * tokens_per_frame]
    sizes: list[int] = []
    frame, end = frame_offset, frame_offset + num_frames
    while frame < end:
        block_end = min((frame // config.frames_per_block + 1) * config.frames_per_block, end)
        sizes.append((block_end - frame) * tokens_per_frame)
        frame = block_end
    return sizes


def block_causal_mask(
    query_frames: torch.Tensor, key_frames: torch.Tensor, frames_per_block: int
) -> torch.Tensor:
    """Boolean attention mask: `True` where key block <= query block.

    Shapes:
        query_frames: `(Nq,)` latent-frame index of each query token (int).
        key_frames: `(Nk,)` latent-frame index of each key token (int).
        returns `(Nq, Nk)` bool, usable as `attn_mask` of `F.scaled_dot_product_attention`.
    """
    query_block = torch.div(query_frames, frames_per_block, rounding_mode="floor")  # (Nq,)
    key_block = torch.div(key_frames, frames_per_block, rounding_mode="floor")  # (Nk,)
    return key_block[None, :] <= query_block[:, None]  # (Nq, Nk)


def teacher_forcing_mask(
    num_frames: int,
    frames_per_block: int,
    tokens_per_frame: int,
    frame_offset: int = 0,
    context_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask of a teacher-forcing sequence `[clean T frames | noisy T frames]`.

    Clean query block `i` sees clean blocks `<= i` (block-causal); noisy query block `j` sees
    clean blocks `< j` and noisy block `j`. Blocks are absolute: `(frame_offset + f) //
    frames_per_block`.

    `context_visible` narrows what each block sees of the **earlier** clean blocks to what a
    memory policy's cache holds when that block is generated (and, for a clean block, when it
    is written): `context_visible[..., j, i]` for query frame `j` and clean key frame `i`
    (`reverie.memory.context_visibility`; RELIC arXiv 2512.04040 §4.4.1, training on the
    memory's context). Entries of a query's own block and later ones are not read.

    Shapes: `context_visible` `(T, T)` or `(B, T, T)` bool; returns `(2 N, 2 N)` (or
    `(B, 2 N, 2 N)`) bool, `N = num_frames * tokens_per_frame`, usable as `attn_mask` of
    `F.scaled_dot_product_attention` (True = attend; a batched mask needs a head axis).

    Raises:
        ValueError: `context_visible` is not `(T, T)` or `(B, T, T)`.
    """
    frames = torch.arange(frame_offset, frame_offset + num_frames).repeat_interleave(
        tokens_per_frame
    )  # (N,)
    block = torch.div(frames, frames_per_block, rounding_mode="floor")  # (N,)
    earlier = block[None, :] < block[:, None]  # (N, N): key block < query block
    same = block[None, :] == block[:, None]  # (N, N)
    if context_visible is not None:
        if context_visible.ndim not in (2, 3) or context_visible.shape[-2:] != (
            num_frames,
            num_frames,
        ):
            raise ValueError(
                f"context_visible must be ({num_frames}, {num_frames}) or (B, {num_frames}, "
                f"{num_frames}), got {tuple(context_visible.shape)}"
            )
        visible = context_visible.to(torch.bool).repeat_interleave(tokens_per_frame, -1)
        visible = visible.repeat_interleave(tokens_per_frame, -2).to(earlier.device)  # (.., N, N)
        earlier = earlier & visible
        same = same.expand_as(earlier)
    top = torch.cat([earlier | same, torch.zeros_like(same)], dim=-1)  # clean queries
    bottom = torch.cat([earlier, same], dim=-1)  # noisy queries
    return torch.cat([top, bottom], dim=-2)  # (.., 2N, 2N)


@dataclass(frozen=True)
class PooledContext:
    """Spatially pooled copies of clean frames for a teacher-forced forward: a compressing
    memory's context in training (RELIC arXiv 2512.04040 §4.3 memory, §4.4.1 training on it).

    Pooled token ``p`` is the average ``sum_n pool[p, n] * token_n`` of clean tokens: of their
    keys (pose embedding included, before RoPE) and values, placed at the same average of their
    positions and rotated there, as ``reverie.memory.pool_frame`` pools a cached frame. Built
    by ``reverie.memory.context_layout`` from the policy itself.

    Attributes:
        pool: ``(Np, N)`` float, ``N`` = the clip's clean tokens (frame-major).
        visible: ``(T, Np)`` or ``(B, T, Np)`` bool: query frame ``j`` (clean and noisy copy)
            attends to pooled token ``p``.
    """

    pool: torch.Tensor
    visible: torch.Tensor


@dataclass(frozen=True)
class PooledKeys:
    """One forward's pooled clean tokens, as the self-attention applies them: ``pool``
    ``(Np, N)`` and the RoPE tables ``cos, sin`` ``(Np, Dh // 2)`` at their positions."""

    pool: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_sizes: Sequence[int],
    num_context: int,
) -> torch.Tensor:
    """Block-causal attention as one SDPA call per query block over a key prefix.

    Keys are `[context (always visible) | current chunk]`; query block `b` sees the context and
    the chunk's tokens up to the end of block `b`. One block == plain full attention.

    Shapes:
        q: `(B, H, Nq, Dh)`; k, v: `(B, H, num_context + Nq, Dh)`; `sum(block_sizes) == Nq`.
        returns `(B, H, Nq, Dh)`.
    """
    if len(block_sizes) == 1:
        return F.scaled_dot_product_attention(q, k, v)
    outputs, start = [], 0
    for size in block_sizes:
        end = start + size
        visible = num_context + end
        outputs.append(
            F.scaled_dot_product_attention(
                q[:, :, start:end], k[:, :, :visible], v[:, :, :visible]
            )  # (B, H, size, Dh)
        )
        start = end
    return torch.cat(outputs, dim=2)  # (B, H, Nq, Dh)


@dataclass
class PastKeyValues:
    """Cached context handed to one layer's self-attention.

    Attributes:
        keys, values: `(B, H, Nc, Dh)`; keys already carry RoPE at their stored positions
            (applied once, when written: see `kv_cache.py`). Read-only.
        scratch: optional `(keys, values)` views `(B, H, Nc + N, Dh)` of the cache's storage
            whose first `Nc` tokens are `keys`/`values`: the attention writes the chunk's N
            keys and values into the rest and attends over the views, with no
            concatenation. Used only when dtype and batch match and no gradient is recorded.
    """

    keys: torch.Tensor
    values: torch.Tensor
    scratch: tuple[torch.Tensor, torch.Tensor] | None = None

    def with_chunk(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[cached | chunk]` keys and values `(B, H, Nc + N, Dh)` for chunk `k, v (B, H, N, Dh)`
        (keys with RoPE), in the chunk's dtype."""
        num_context = self.keys.shape[2]
        if self.scratch is not None:
            sk, sv = self.scratch
            usable = (
                sk.shape[2] == num_context + k.shape[2]
                and sk.shape[0] == k.shape[0]
                and (sk.dtype, sv.dtype) == (k.dtype, v.dtype)
                and not (torch.is_grad_enabled() and (k.requires_grad or v.requires_grad))
            )
            if usable:
                sk[:, :, num_context:] = k
                sv[:, :, num_context:] = v
                return sk, sv
        keys = torch.cat([self.keys.to(k.dtype), k], dim=2)
        values = torch.cat([self.values.to(v.dtype), v], dim=2)
        return keys, values


class FP32RMSNorm(nn.RMSNorm):
    """RMSNorm computed in float32, cast back (Wan's `WanRMSNorm`; parameter `weight`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), self.normalized_shape, weight, self.eps).type_as(x)


def _qk_norm(dim: int, enabled: bool, eps: float) -> nn.Module:
    # RMSNorm over all heads at once (Wan's WanRMSNorm(dim)), not per head.
    return FP32RMSNorm(dim, eps=eps) if enabled else nn.Identity()


class SelfAttention(nn.Module):
    """Wan self-attention with RMS-normed Q/K, 3D RoPE and optional pose-conditioned Q/K.

    Parameter names (`q, k, v, o, norm_q, norm_k`) follow the Wan2.1 reference checkpoint.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = _qk_norm(dim, qk_norm, eps)
        self.norm_k = _qk_norm(dim, qk_norm, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        block_sizes: Sequence[int],
        *,
        pose_qk: tuple[torch.Tensor, torch.Tensor] | None = None,
        past: PastKeyValues | None = None,
        attn_mask: torch.Tensor | None = None,
        pooled: PooledKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attend the chunk's tokens to `past` and (block-causally) to themselves.

        RELIC §4.1.2: absolute-pose embeddings are added to Q and K (not V) before attention;
        we add them after the Q/K RMSNorm and before RoPE, per latent frame, broadcast over the
        frame's spatial tokens.

        Shapes:
            x: `(B, N, D)`, `N = T * S` tokens of T frames with S tokens each, frame-major.
            cos, sin: `(N, Dh // 2)` RoPE tables of the chunk's tokens.
            block_sizes: query-block token counts (`query_block_sizes`), summing to N.
            pose_qk: `(q_add, k_add)`, each `(B, T, D)`; None = no pose conditioning.
            attn_mask: `(N, N)` bool replacing `block_sizes` (e.g. `teacher_forcing_mask`);
                not with `past`. With `pooled`: `(.., N, N + Np)`.
            pooled: pooled copies of the first `pool.shape[1]` tokens (`PooledContext`),
                appended to the keys and values; needs `attn_mask`.
            returns `(out (B, N, D), k (B, H, N, Dh) without RoPE, v (B, H, N, Dh))`; a cache
            write stores k (rotated by the cache at the chunk's positions) and v.
        """
        q = self.norm_q(self.q(x))  # (B, N, D)
        k = self.norm_k(self.k(x))  # (B, N, D)
        v = self.v(x)  # (B, N, D)
        if pose_qk is not None:
            q_add, k_add = pose_qk  # (B, T, D) each
            q = (q.unflatten(1, (q_add.shape[1], -1)) + q_add[:, :, None]).flatten(1, 2)
            k = (k.unflatten(1, (k_add.shape[1], -1)) + k_add[:, :, None]).flatten(1, 2)
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v)
        )  # (B, H, N, Dh) each
        q_rot = apply_rotary(q, cos, sin)  # (B, H, N, Dh)
        k_rot = apply_rotary(k, cos, sin)  # (B, H, N, Dh)
        num_context = 0
        keys, values = k_rot, v
        if past is not None:
            keys, values = past.with_chunk(k_rot, v)  # (B, H, Nc + N, Dh) each
            num_context = past.keys.shape[2]
        if pooled is not None:
            if attn_mask is None:
                raise ValueError("pooled keys need an attn_mask")
            pool = pooled.pool.to(k.dtype)  # (Np, Nc)
            n = pool.shape[1]
            k_pool = torch.einsum("pn,bhnd->bhpd", pool, k[:, :, :n])  # (B, H, Np, Dh)
            v_pool = torch.einsum("pn,bhnd->bhpd", pool, v[:, :, :n])  # (B, H, Np, Dh)
            keys = torch.cat([keys, apply_rotary(k_pool, pooled.cos, pooled.sin)], dim=2)
            values = torch.cat([values, v_pool], dim=2)
        if attn_mask is not None:
            if past is not None:
                raise ValueError("attn_mask cannot be combined with cached keys")
            out = F.scaled_dot_product_attention(q_rot, keys, values, attn_mask=attn_mask)
        else:
            out = prefix_attention(q_rot, keys, values, block_sizes, num_context)  # (B,H,N,Dh)
        out = rearrange(out, "b h n d -> b n (h d)")  # (B, N, D)
        return self.o(out), k, v


class CrossAttention(nn.Module):
    """Wan text cross-attention (`WanT2VCrossAttention`): video queries, text keys/values.

    Image cross-attention (Wan i2v's `k_img`/`v_img`) is not implemented.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = _qk_norm(dim, qk_norm, eps)
        self.norm_k = _qk_norm(dim, qk_norm, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Shapes: x `(B, N, D)`, context `(B, L, D)` (text-embedded) -> `(B, N, D)`."""
        h = self.num_heads
        q = rearrange(self.norm_q(self.q(x)), "b n (h d) -> b h n d", h=h)  # (B, H, N, Dh)
        k = rearrange(self.norm_k(self.k(context)), "b l (h d) -> b h l d", h=h)  # (B, H, L, Dh)
        v = rearrange(self.v(context), "b l (h d) -> b h l d", h=h)  # (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        return self.o(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)
