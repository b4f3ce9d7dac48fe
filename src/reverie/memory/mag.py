"""`mag`: Memorize-and-Generate's compressed cache (MAG arXiv 2512.18741 §3.3-3.4).

MAG decouples memorising from generating. After the generator has denoised a block of `b`
latent frames, a separately trained **memory model** runs the cache-write pass on the clean
block, with **empty text**: full attention inside the block lets it pack the whole block into
the K/V of the block's **last frame**, and only that frame's K/V is kept (compression rate
`b`; MAG uses b = 3, Table 4). The memory model is trained as an autoencoder (decode the `b`
frames back from the kept K/V), so memory fidelity is measurable by reconstruction.

Here:
- `MagPolicy.write_spec` tells the engine to write with `writer` (the memory model; None =
  the generator itself, e.g. before a memory model is trained) and the empty prompt
  (`write_with_empty_text`); `reverie.memory.write_block(policy, cache, model, x0, text,
  empty_context=...)` performs MAG's cache write for a clean block.
- `after_write` keeps the last frame of the block just written (the block is the `T` frames
  the engine passed), at its true absolute position; the rest of the block is dropped.
- The paper keeps all history (`max_frames=None`); MAG's released inference code holds at most
  40 latent-frame slots of cache, which is our default bound: beyond it the oldest kept frames
  after the `sink_frames` first ones are dropped (as a rolling window).
MAG's randomised RoPE start index (§3.4) is a training-time device; at inference frames keep
their true indices.

The memory model is the policy's learned component (`MagPolicy.components`): a packaged world
model holds it in `memory_model/` as a `reverie.models` checkpoint (`save_memory_model` /
`load_memory_model`); the `mag` training stage trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reverie.memory.policy import (
    CacheResidentPolicy,
    Component,
    WriteSpec,
    check_new_block,
    register_policy,
)
from reverie.memory.window import sink_and_window_slots
from reverie.models.checkpoints import load_checkpoint, save_checkpoint
from reverie.models.kv_cache import KVCache
from reverie.models.wan_dit import WanDiT


def save_memory_model(model: WanDiT, directory: str | Path) -> Path:
    """Write the memory model to `directory` (a `reverie.models` checkpoint, in its dtype)."""
    return save_checkpoint(model, directory)


def load_memory_model(directory: str | Path, device: str | torch.device = "cpu") -> WanDiT:
    """The memory model `save_memory_model` wrote, in float32 on `device`.

    Raises:
        FileNotFoundError: a missing file. CheckpointKeyError / ValueError: weights that do not
            fit their config.
    """
    return load_checkpoint(directory, device=device, dtype=torch.float32)


MEMORY_MODEL = Component(
    keyword="writer", directory="memory_model", load=load_memory_model, save=save_memory_model
)


@dataclass(frozen=True)
class MagConfig:
    """MAG's compressed cache.

    Attributes:
        write_with_empty_text: the cache-write pass uses the empty prompt (MAG §3.3; the
            official pipeline always does).
        max_frames: most kept frames (one per block), or None to keep all history (the paper).
        sink_frames: oldest kept frames never dropped when `max_frames` is reached.
        block_frames: MAG's compression rate `b` in latent frames when it differs from the
            generator's block (e.g. a 1-frame-per-block student with a memory model trained at
            b = 3): written frames accumulate uncompressed until `b` are pending, then only
            the last is kept. None: every written block is one MAG block (the paper).
    """

    write_with_empty_text: bool = True
    max_frames: int | None = 40
    sink_frames: int = 1
    block_frames: int | None = None

    def __post_init__(self) -> None:
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be >= 0, got {self.sink_frames}")
        if self.block_frames is not None and self.block_frames < 1:
            raise ValueError(f"block_frames must be >= 1 or None, got {self.block_frames}")
        if self.max_frames is not None and self.max_frames <= self.sink_frames:
            raise ValueError(
                f"max_frames ({self.max_frames}) must exceed sink_frames ({self.sink_frames})"
            )


@register_policy("mag")
class MagPolicy(CacheResidentPolicy):
    """Keep only the last frame of every written block, written by MAG's memory model.

    Args:
        config: `MagConfig`.
        writer: the memory model (a `WanDiT` with the generator's layer/head sizes), or None to
            let the generator write; a packaged world model passes its `memory_model`.
    """

    config_class = MagConfig
    components = {"memory_model": MEMORY_MODEL}

    def __init__(self, config: MagConfig | None = None, writer: nn.Module | None = None) -> None:
        super().__init__(MagConfig() if config is None else config)
        self.writer = writer
        self.pending = 0  # frames written since the last compression (block_frames mode)

    def reset(self) -> None:
        """Forget the count of uncompressed frames (new stream)."""
        self.pending = 0

    @property
    def max_frames(self) -> int | None:
        return self.config.max_frames

    @property
    def write_spec(self) -> WriteSpec:
        return WriteSpec(model=self.writer, empty_text=self.config.write_with_empty_text)

    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Drop all but the last frame of the block just written; bound the cache.

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)` (T = MAG's `b`).

        Raises:
            ValueError: if the cache holds fewer than T frames.
        """
        num_new = check_new_block(cache, latents)
        num_frames = cache.num_frames
        if self.config.block_frames is not None:  # MAG blocks span several written blocks
            self.pending += num_new
            if self.pending < self.config.block_frames:
                return
            num_new, self.pending = min(self.pending, num_frames), 0
        slots = list(range(num_frames - num_new)) + [num_frames - 1]  # old + block's last
        cap = self.config.max_frames
        if cap is not None and len(slots) > cap:
            keep = sink_and_window_slots(
                len(slots), self.config.sink_frames, cap - self.config.sink_frames
            )
            slots = [slots[i] for i in keep]
        if len(slots) < num_frames:
            cache.select_frames(slots)
