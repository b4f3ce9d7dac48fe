"""Resumable, rank-split, seeded data streams, and dataset checks that run before any compute.

The global stream is a sequence of epochs (each a permutation of the dataset drawn from
``(seed, epoch)``) cut into *global micro-batches* of ``batch_size`` samples; rank ``r`` of ``W``
takes the contiguous slice ``[r * B/W, (r + 1) * B/W)`` of each. Hence:

- a run on ``W`` ranks sees exactly the samples of the single-process run (DDP/FSDP average the
  gradients of the slices, which equals the full-batch gradient of a mean loss);
- resuming at micro-batch ``start`` continues the same stream;
- each sample's own randomness (augmentations drawing from the global RNGs) is seeded from
  ``(seed, position in the stream)``, so it does not depend on resumes or ``num_workers``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reverie.training.seeding import mix_seed, seed_worker


class ResumableSampler(Sampler[tuple[int, int]]):
    """Infinite stream of ``(position, index)`` pairs of this rank's share of the global stream.

    Args:
        num_items: dataset length (> 0).
        batch_size: global micro-batch size, divisible by ``world_size``.
        rank, world_size: this process and the number of processes.
        seed: seed of the epoch permutations.
        start: global micro-batches already consumed (stored in checkpoints).
        shuffle: permute each epoch (False: dataset order).

    Raises:
        ValueError: bad sizes (``batch_size`` not divisible by ``world_size`` among them).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        if num_items < 1:
            raise ValueError("the dataset is empty")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} must be a positive multiple of the world size "
                f"{world_size}"
            )
        if not 0 <= rank < world_size or start < 0:
            raise ValueError(f"bad rank {rank}/{world_size} or start {start}")
        self.n, self.batch_size = num_items, batch_size
        self.local = batch_size // world_size
        self.rank, self.seed, self.start, self.shuffle = rank, seed, start, shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        cached_epoch, order = -1, []
        micro = self.start
        while True:
            first = micro * self.batch_size + self.rank * self.local
            for pos in range(first, first + self.local):
                epoch = pos // self.n
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch(epoch)
                yield pos, order[pos % self.n]
            micro += 1


class SeededItems(Dataset):
    """Wrap a map-style dataset so that item ``(position, index)`` is ``dataset[index]`` computed
    with python/numpy/torch RNGs seeded from ``(seed, position)``; the caller's RNG states are
    restored afterwards."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        position, index = key
        seed = mix_seed(self.seed, position)
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what gets seeded
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only; torch.manual_seed is slow
            random.seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global RNG is what gets seeded
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)  # noqa: NPY002 - the legacy global RNG is what gets seeded


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    start: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """An infinite DataLoader over this rank's share of the global stream (module docstring).

    Each yielded batch holds ``batch_size // world_size`` items. Use it as a stage's
    ``batches(start)``: ``return iter(make_loader(..., start=start))``.

    Raises:
        ValueError: see :class:`ResumableSampler`.
    """
    sampler = ResumableSampler(
        len(dataset),
        batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        start=start,
        shuffle=shuffle,
    )
    return DataLoader(
        SeededItems(dataset, seed),
        batch_size=sampler.local,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def check_dataset(root: str | Path, resolution: int, clip_frames: int = 1):
    """Open a rendered dataset's manifest and check it before training (no video is decoded).

    Args:
        root: directory written by ``reverie render``.
        resolution: the frame side the stage's model expects, pixels.
        clip_frames: frames per training clip; every episode must be at least this long.

    Returns:
        The :class:`reverie.data.ClipDataset` (episodes load lazily).

    Raises:
        FileNotFoundError: no manifest under ``root``.
        ValueError: a different or mixed resolution, episodes shorter than ``clip_frames``,
            an empty dataset.
    """
    from reverie.data import ClipDataset

    return ClipDataset(root, clip_frames, resolution=resolution)
