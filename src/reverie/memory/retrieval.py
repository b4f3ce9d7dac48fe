"""`retrieval`: frame sink + short window + frames retrieved from the whole history by
embedding similarity (LongLive-RAG arXiv 2606.02553).

Every clean latent frame is embedded when it is written (`embed`: `(B, C, H, W) -> (B, D)`,
L2-normalised; default `PooledLatentEmbedding`, or a trained `RetrievalEmbedder`). Frames that
leave the local window are **offloaded** with their embedding to `offload_device` (CPU by
default) and kept for the rest of the stream. After each write (LongLive-RAG: at each new
block):

1. embed the block's frames; frames beyond the local window move to the offloaded history;
2. query = embedding of the newest clean frame; candidates = offloaded frames except the
   `exclude_recent` most recently evicted ones (near-duplicates of the window);
3. cosine top-`top_k` over the candidates (mean cosine over the batch, so all samples share
   the frames; B = 1 in interactive use);
4. the cache becomes `[sink | retrieved | local window]`, shared by all layers and by all
   denoising passes and the write pass of the next block.

The cache then never holds more than `sink_frames + top_k + window_frames` frames: a fixed
attention budget (LongLive-RAG: 1 + 6 + 5 = 12 frames, the window shortened from LongLive's).

**Temporal RoPE index of retrieved frames** (`retrieved_time`): `zero` (default) places them
at temporal position 0, where the stream's first frame, the sink, lives, as LongLive-RAG does
(retrieved frames read as extra sink frames; this also keeps their distance to the current
block as small as the sink's rather than growing with their age); `true` keeps their absolute
index. The frame's keys are rotated along the time axis by the position change
(`FrameTokens.with_time`; keys carry RoPE at their stored positions); spatial positions and V
are exactly what was written, and the frame's bookkeeping index stays its true one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from einops import rearrange

from reverie.memory.cache_ops import FrameTokens, assemble, split_frames
from reverie.memory.embedding import (
    EmbeddingFn,
    PooledLatentEmbedding,
    load_retrieval_embedder,
    save_retrieval_embedder,
)
from reverie.memory.policy import Component, WriteSpec, check_new_block, register_policy
from reverie.models.kv_cache import FP8, KVCache


class RetrievedTime(StrEnum):
    """Temporal RoPE position given to retrieved frames."""

    ZERO = "zero"  # LongLive-RAG: index 0, the sink's position
    TRUE = "true"  # the frame's own absolute latent-frame index


@dataclass(frozen=True)
class RetrievalConfig:
    """LongLive-RAG retrieval memory (defaults: LongLive-RAG's released setting).

    Attributes:
        sink_frames: first latent frames of the stream, always attended (>= 0).
        window_frames: newest latent frames, always attended (>= 1).
        top_k: history frames retrieved per block (>= 0).
        exclude_recent: most recently evicted frames never retrieved (>= 0).
        retrieved_time: temporal RoPE position of retrieved frames (`RetrievedTime`).
        offload_device: device of the offloaded history (e.g. "cpu"); None = the cache's.
        pooled_grid: grid of the default `PooledLatentEmbedding` (used when no `embed`).
    """

    sink_frames: int = 1
    window_frames: int = 5
    top_k: int = 6
    exclude_recent: int = 5
    retrieved_time: RetrievedTime = RetrievedTime.ZERO
    offload_device: str | None = "cpu"
    pooled_grid: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.retrieved_time, RetrievedTime):
            raise TypeError(f"retrieved_time must be a RetrievedTime, got {self.retrieved_time!r}")
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {self.window_frames}")
        if min(self.sink_frames, self.top_k, self.exclude_recent) < 0:
            raise ValueError("sink_frames, top_k and exclude_recent must be >= 0")

    @property
    def max_frames(self) -> int:
        """The attention budget in latent frames: sink + retrieved + local window."""
        return self.sink_frames + self.top_k + self.window_frames


def bank_dtype(cache: KVCache) -> torch.dtype | None:
    """dtype of the offloaded history: the cache's storage dtype; bfloat16 for an FP8 cache
    (whose frames are read dequantised); None (as read) for a cache storing as written."""
    if cache.storage_dtype is FP8:
        return torch.bfloat16
    return cache.storage_dtype


@register_policy("retrieval")
class RetrievalPolicy:
    """Sink + retrieved history frames + short local window, under a fixed frame budget.

    Args:
        config: `RetrievalConfig`.
        embed: latent-frame embedding `(B, C, H, W) -> (B, D)`, L2-normalised; default
            `PooledLatentEmbedding(config.pooled_grid)`. Called under `torch.no_grad()`. A
            packaged world model passes its trained `retrieval_embedder` (`RetrievalEmbedder`).
    """

    config_class = RetrievalConfig
    components = {
        "retrieval_embedder": Component(
            keyword="embed",
            directory="retrieval",
            load=load_retrieval_embedder,
            save=save_retrieval_embedder,
        )
    }

    def __init__(self, config: RetrievalConfig | None = None, embed: EmbeddingFn | None = None):
        self.config = RetrievalConfig() if config is None else config
        if not isinstance(self.config, RetrievalConfig):
            raise TypeError("RetrievalPolicy needs a RetrievalConfig")
        self.embed = PooledLatentEmbedding(self.config.pooled_grid) if embed is None else embed
        self.reset()

    # ----------------------------------------------------------------------- protocol
    @property
    def max_frames(self) -> int:
        return self.config.max_frames

    @property
    def write_spec(self) -> WriteSpec:
        return WriteSpec()

    def reset(self) -> None:
        """Forget the offloaded history, embeddings and the sink (new episode)."""
        self.bank: list[FrameTokens] = []  # offloaded frames, in eviction (= time) order
        self._bank_matrix: torch.Tensor | None = None  # (capacity, B, D): rows [0, len(bank))
        self._bank_position: dict[int, int] = {}  # frame index -> position in bank
        self._bank_tokens = self._bank_bytes = 0
        self._embeddings: dict[int, torch.Tensor] = {}  # (B, D) of frames in the window
        self.sink_indices: list[int] = []
        self.retrieved_indices: list[int] = []  # frames retrieved into the cache, time order

    def num_tokens(self, cache: KVCache) -> int:
        """Cache tokens plus offloaded tokens (retrieved frames exist in both and count twice)."""
        return cache.num_tokens + self._bank_tokens

    def nbytes(self, cache: KVCache) -> int:
        """Cache K/V + offloaded K/V + stored embeddings, in bytes."""
        window = sum(e.numel() * e.element_size() for e in self._embeddings.values())
        bank = 0
        if self._bank_matrix is not None:  # the rows in use
            row = self._bank_matrix[0]
            bank = len(self.bank) * row.numel() * row.element_size()
        return cache.nbytes + self._bank_bytes + bank + window

    # ---------------------------------------------------------------------- algorithm
    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Embed the new block, offload frames leaving the window, retrieve for the next block.

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)`; its frames are the last
                T frames of `cache`.

        Raises:
            ValueError: if the cache holds fewer than T frames.
        """
        cfg = self.config
        num_new = check_new_block(cache, latents)
        offload = cache.keys[0].device if cfg.offload_device is None else cfg.offload_device

        # Step 1: embed the new frames; the first frames of the stream become the sink.
        with torch.no_grad():
            flat = rearrange(latents, "b t c h w -> (b t) c h w")
            emb = self.embed(flat).unflatten(0, (latents.shape[0], num_new))  # (B, T, D)
        for j, frame in enumerate(cache.frames[-num_new:]):
            if len(self.sink_indices) < cfg.sink_frames:
                self.sink_indices.append(frame.index)
            else:
                self._embeddings[frame.index] = emb[:, j].to(offload, copy=True)  # (B, D)

        # Step 2: frames beyond the local window go to the offloaded history.
        sink, retrieved = set(self.sink_indices), set(self.retrieved_indices)
        sink_slots = [s for s, f in enumerate(cache.frames) if f.index in sink]
        local_slots = [
            s for s, f in enumerate(cache.frames) if f.index not in sink | retrieved
        ]  # time order: the engine appends blocks at the end
        evicted, window_slots = (
            local_slots[: -cfg.window_frames],
            local_slots[-cfg.window_frames :],
        )
        for part in split_frames(cache, evicted):  # device -> offload copy (a sync on GPU)
            self._offload(part.to(offload, dtype=bank_dtype(cache)))

        # Step 3: cosine top-k of the newest frame against non-recent history.
        chosen = self._top_k(emb[:, -1])  # query (B, D)

        # Step 4: cache = [sink | retrieved | local window].
        if not evicted and chosen == self.retrieved_indices:
            return
        position = self._bank_position
        device = cache.keys[0].device
        read_dtype = torch.float32 if cache.storage_dtype is FP8 else None  # as split_frames
        retrieved_parts = [self._placed(self.bank[position[i]], device, read_dtype) for i in chosen]
        parts = split_frames(cache, sink_slots)
        parts += retrieved_parts
        parts += split_frames(cache, window_slots)
        assemble(cache, parts)
        self.retrieved_indices = chosen

    def _offload(self, part: FrameTokens) -> None:
        """Add an evicted frame to the history, its embedding to the search matrix (grown
        geometrically, so each addition costs O(1) amortised, not O(history))."""
        embedding = self._embeddings.pop(part.frame.index)  # (B, D)
        n = len(self.bank)
        if self._bank_matrix is None or n == self._bank_matrix.shape[0]:
            grown = embedding.new_empty(max(64, 2 * n), *embedding.shape)
            if n:
                grown[:n] = self._bank_matrix[:n]
            self._bank_matrix = grown
        self._bank_matrix[n] = embedding
        self._bank_position[part.frame.index] = n
        self.bank.append(part)
        self._bank_tokens += part.num_tokens
        self._bank_bytes += part.nbytes

    def _top_k(self, query: torch.Tensor) -> list[int]:
        """Frame indices of the top-k candidates by mean cosine similarity, in time order."""
        cfg = self.config
        num_candidates = len(self.bank) - cfg.exclude_recent
        k = min(cfg.top_k, num_candidates)
        if k <= 0:
            return []
        keys = self._bank_matrix[:num_candidates]  # (M, B, D)
        query = query.to(keys.device)  # (B, D)
        scores = torch.einsum("mbd,bd->mb", keys.float(), query.float()).mean(dim=1)  # (M,)
        # Host sync (once per block, outside any forward): the chosen frames are host indices.
        best = sorted(torch.topk(scores, k).indices.tolist())
        return [self.bank[i].frame.index for i in best]

    def _placed(
        self, part: FrameTokens, device: torch.device, dtype: torch.dtype | None
    ) -> FrameTokens:
        """An offloaded frame brought to the cache's device (in `dtype`, default unchanged) at
        its temporal RoPE position."""
        part = part.to(device, copy=False, dtype=dtype)  # `assemble` copies it into the cache
        if self.config.retrieved_time is RetrievedTime.ZERO:
            part = part.with_time(0.0)
        return part
