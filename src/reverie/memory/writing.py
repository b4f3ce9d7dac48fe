"""The cache-write step of streaming generation, shared by every memory policy.

After a block's denoising passes, Self Forcing (arXiv 2506.08009 §3) runs one more forward on the
clean block at flow time 0 with `write_cache=True`, which appends the block's keys/values. MAG
(arXiv 2512.18741 §3.3-3.4) runs this pass with a separate *memory model* and the empty prompt,
then keeps only the block's last frame. `write_block` does both, reading `policy.write_spec`,
and then hands the cache to the policy (`after_write`).
"""

from __future__ import annotations

import torch

from reverie.memory.policy import MemoryPolicy
from reverie.models.kv_cache import KVCache
from reverie.models.wan_dit import WanDiT


def write_block(
    policy: MemoryPolicy,
    cache: KVCache,
    model: WanDiT,
    latents: torch.Tensor,
    context: torch.Tensor,
    *,
    empty_context: torch.Tensor | None = None,
    actions: torch.Tensor | None = None,
    poses: tuple[torch.Tensor, torch.Tensor] | None = None,
    context_time: float = 0.0,
    frame_offset: int | None = None,
) -> None:
    """Write a clean block into the cache with the policy's writer, then apply the policy.

    Steps: (1) pick the writer (`policy.write_spec.model`, else `model`) and the text
    (the empty prompt if `write_spec.empty_text`, MAG §3.3); (2) one forward of the writer on
    the clean block at flow time `context_time` with `write_cache=True`, attending to the
    current cache (the block lands at latent frame `frame_offset`, default `cache.next_frame`;
    the streaming engine passes its own count, as eviction may hide the newest index); its
    output is discarded;
    (3) `policy.after_write(cache, latents)`.

    Runs in the caller's grad mode (wrap in `torch.no_grad()` for inference).

    Shapes:
        latents: clean block `(B, T, C, H, W)`.
        context: text states `(B, L, text_dim)`; empty_context: the empty prompt's states
            `(B, L', text_dim)`, required when the policy writes with empty text.
        actions, poses: as `WanDiT.forward`, for the block's video frames.

    Raises:
        ValueError: if the policy writes with empty text and `empty_context` is None, or from
            the model / policy on inconsistent shapes.
    """
    spec = policy.write_spec
    writer = model if spec.model is None else spec.model
    text = context
    if spec.empty_text:
        if empty_context is None:
            raise ValueError(
                f"memory policy {policy.name!r} writes the cache with empty text: pass "
                "empty_context (the text encoder's states of the empty prompt)"
            )
        text = empty_context
    t = torch.full((latents.shape[0],), context_time, device=latents.device)  # (B,)
    writer(
        latents,
        t,
        text,
        actions=actions,
        poses=poses,
        cache=cache,
        write_cache=True,
        frame_offset=frame_offset,
    )
    policy.after_write(cache, latents)
