"""The Wan2.1 DiT block and output head, with RELIC's action and pose injection points.

Submodule names follow the Wan2.1 reference checkpoint (Wan-Video/Wan2.1 `wan/modules/model.py`),
so original checkpoints load without renaming. Note the reference naming quirk: `norm3` is the
(optional, affine) cross-attention norm and `norm2` the FFN norm; diffusers swaps the two names.

Modulation is per latent frame: `t` may differ between frames (diffusion forcing, Self Forcing),
so the six shift/scale/gate vectors have shape `(B, T, D)` (or `(B, 1, D)`, broadcast) and are
applied to the frame's `S` spatial tokens. Norms and modulation run in float32 like Wan.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reverie.models.attention import CrossAttention, PastKeyValues, PooledKeys, SelfAttention

# Wan's adaLN produces 6 vectors per block (shift/scale/gate for attention and FFN) and 2 for
# the head (shift/scale).
BLOCK_MODULATIONS = 6
HEAD_MODULATIONS = 2


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, cast back (Wan's `WanLayerNorm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


def per_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """View tokens frame by frame. Shapes: `(B, T * S, D)` -> `(B, T, S, D)`."""
    return x.unflatten(1, (num_frames, -1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN `x (1 + scale) + shift` per frame (DiT arXiv 2212.09748 §3.2).

    Shapes: x `(B, T, S, D)`; shift, scale `(B, T or 1, D)`; returns `(B, T, S, D)` float32.
    """
    return x.float() * (1 + scale[:, :, None]) + shift[:, :, None]


class WanBlock(nn.Module):
    """Self-attention -> (+ action) -> text cross-attention -> FFN, with adaLN per frame."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        qk_norm: bool,
        cross_attn_norm: bool,
        eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads, qk_norm, eps)
        self.norm3 = (
            FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim)
        )
        # Wan's per-block table added to the shared time projection (`modulation` in Wan,
        # `scale_shift_table` in diffusers).
        self.modulation = nn.Parameter(torch.zeros(1, BLOCK_MODULATIONS, dim))

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int,
        time_mod: torch.Tensor,
        context: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        block_sizes: Sequence[int],
        *,
        action: torch.Tensor | None = None,
        pose_qk: tuple[torch.Tensor, torch.Tensor] | None = None,
        past: PastKeyValues | None = None,
        attn_mask: torch.Tensor | None = None,
        pooled: PooledKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One DiT block (Wan2.1 `WanAttentionBlock`; RELIC §4.1.2 for action/pose).

        Shapes:
            x: `(B, N, D)`, `N = T * S` frame-major tokens of `num_frames` (T) frames.
            time_mod: `(B, T or 1, 6, D)` shared time projection (float32).
            context: `(B, L, D)` embedded text.
            cos, sin: `(N, Dh // 2)` RoPE tables; block_sizes: see `query_block_sizes`.
            action: `(B, T, D)` added to every token of its frame after self-attention.
            pose_qk: `(q_add, k_add)`, each `(B, T, D)`, added to Q and K before attention.
            past: cached context of this layer.
            attn_mask: `(N, N)` bool self-attention mask replacing `block_sizes`.
            pooled: pooled clean tokens appended to the keys (`SelfAttention.forward`).
            returns `(x (B, N, D), k (B, H, N, Dh) without RoPE, v (B, H, N, Dh))`.
        """
        mod = self.modulation[:, None] + time_mod  # (B, T|1, 6, D)
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(2)  # (B, T|1, D)

        # 1. Self-attention on modulated tokens, gated residual (+ RELIC action embedding).
        h = modulate(per_frame(self.norm1(x), num_frames), shift_sa, scale_sa)  # (B, T, S, D)
        h = h.flatten(1, 2).type_as(x)  # (B, N, D)
        y, k, v = self.self_attn(
            h,
            cos,
            sin,
            block_sizes,
            pose_qk=pose_qk,
            past=past,
            attn_mask=attn_mask,
            pooled=pooled,
        )
        out = per_frame(x, num_frames).float() + per_frame(y, num_frames) * gate_sa[:, :, None]
        if action is not None:
            out = out + action[:, :, None]  # (B, T, S, D)
        x = out.flatten(1, 2).type_as(x)  # (B, N, D)

        # 2. Text cross-attention, plain residual.
        x = x + self.cross_attn(self.norm3(x), context)  # (B, N, D)

        # 3. Feed-forward on modulated tokens, gated residual.
        h = modulate(per_frame(self.norm2(x), num_frames), shift_ff, scale_ff)  # (B, T, S, D)
        y = self.ffn(h.flatten(1, 2).type_as(x))  # (B, N, D)
        out = (
            per_frame(x, num_frames).float()
            + per_frame(y, num_frames).float() * gate_ff[:, :, None]
        )
        return out.flatten(1, 2).type_as(x), k, v


class OutputHead(nn.Module):
    """Final adaLN (shift/scale from the time embedding) + linear to patch pixels (Wan `Head`)."""

    def __init__(self, dim: int, out_features: int, eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.zeros(1, HEAD_MODULATIONS, dim))

    def forward(self, x: torch.Tensor, num_frames: int, time_emb: torch.Tensor) -> torch.Tensor:
        """Shapes: x `(B, N, D)`, time_emb `(B, T or 1, D)` -> `(B, N, out_features)`."""
        mod = self.modulation[:, None] + time_emb[:, :, None].float()  # (B, T|1, 2, D)
        shift, scale = mod.unbind(2)  # (B, T|1, D) each
        h = modulate(per_frame(self.norm(x), num_frames), shift, scale)  # (B, T, S, D)
        return self.head(h.flatten(1, 2).type_as(x))  # (B, N, out_features)
