"""Teacher ODE trajectory shards: what the ``ode`` stage writes and the ``student`` stage
regresses onto (CausVid arXiv 2412.07772 §3.2; RELIC arXiv 2512.04040 §4.4.1).

A directory of ``ShardStore`` shards (kind ``ode``): per clip ``<key>`` a shard holds
``<key>/trajectory`` (S+1, T, C, h, w) float32 at times ``(*student times, 0)``,
``<key>/actions`` (1+4(T-1), 13), ``<key>/R``, ``<key>/P`` and metadata (caption, episode,
start, pivot); ``index.json`` holds ``times`` and the latent statistics.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import Dataset

from reverie.training.latents import TensorBatch, load_item, read_index, read_items


@dataclass
class OdeClip(TensorBatch):
    """A batch of teacher trajectories with their conditioning.

    Shapes:
        trajectory: ``(B, S + 1, T, C, h, w)`` float32 at times ``(*student times, 0)``.
        actions: ``(B, 1 + 4 (T - 1), 13)``; R ``(B, 1 + 4 (T - 1), 3, 3)``; P ``(..., 3)``.
        caption: ``B`` strings.
    """

    trajectory: torch.Tensor
    actions: torch.Tensor
    R: torch.Tensor
    P: torch.Tensor
    caption: list[str]

    batch_field: ClassVar[str] = "trajectory"


class OdeDataset(Dataset):
    """The clips of an ``ode`` output directory (completed shards), one :class:`OdeClip` with
    ``B = 1`` per item; use ``collate_fn=OdeClip.collate``.

    Attributes:
        times: the recorded times ``(*student times, 0.0)``.
        num_latent_frames: ``T`` of every clip; latent_shape: ``(C, h, w)``.

    Raises:
        FileNotFoundError: no index. ValueError: not ``ode`` shards, or none completed.
    """

    TENSORS = ("trajectory", "actions", "R", "P")

    def __init__(self, root: str | Path, cache_clips: int = 256) -> None:
        self.root = Path(root)
        self.index = read_index(self.root, "ode")
        self.times = tuple(self.index["times"])
        self.num_latent_frames = self.index["settings"]["clip_latent_frames"]
        self.latent_shape = tuple(self.index["latent_shape"])
        self.items = read_items(self.root, self.index)
        self._load = functools.lru_cache(maxsize=cache_clips)(self._load_clip)

    def __len__(self) -> int:
        return len(self.items)

    def _load_clip(self, i: int) -> dict[str, torch.Tensor]:
        path, meta = self.items[i]
        return load_item(path, meta["key"], self.TENSORS)

    def __getitem__(self, i: int) -> OdeClip:
        data = self._load(i)
        tensors = {k: v[None] for k, v in data.items()}
        return OdeClip(**tensors, caption=[self.items[i][1]["caption"]])
