"""PyTorch clip dataset over rendered episodes, yielding :class:`Batch` objects.

>>> ds = ClipDataset("data/tiny", clip_frames=33, palindrome=0.5)
>>> loader = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=Batch.collate)
>>> batch = next(iter(loader)).to("cpu")   # batch.frames: (8, 33, 3, 64, 64) in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from reverie.camera import poses_to_actions
from reverie.data.episode import Episode, read_episode
from reverie.data.render_job import read_manifest
from reverie.data.transforms import palindrome_indices, sample_pivot


@dataclass
class Batch:
    """A batch of clips (docs/conventions.md).

    Shapes:
        frames: ``(B, T, 3, H, W)`` float32 in [-1, 1].
        R: ``(B, T, 3, 3)`` float32 world-to-camera; P: ``(B, T, 3)`` float32 metres.
        actions: ``(B, T, 13)`` float32; ``actions[:, t]`` is the motion into frame ``t``.
        action_scale: ``(B,)`` float32, metres per frame (the episode's d̄).
        K: ``(B, 3, 3)`` float32 intrinsics, pixels.
        start: ``(B,)`` int64 first frame of the clip in its episode.
        pivot: ``(B,)`` int64 palindrome pivot (forward frame count), ``T`` when not applied.
        caption, episode: ``B`` strings each.
    """

    frames: torch.Tensor
    R: torch.Tensor
    P: torch.Tensor
    actions: torch.Tensor
    action_scale: torch.Tensor
    K: torch.Tensor
    start: torch.Tensor
    pivot: torch.Tensor
    caption: list[str]
    episode: list[str]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move tensors to ``device``; floating tensors are cast to ``dtype`` when given."""

        def move(x):
            if not isinstance(x, torch.Tensor):
                return x
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    @staticmethod
    def collate(items: list[Batch]) -> Batch:
        """Concatenate batches along ``B`` (use as a DataLoader ``collate_fn``)."""
        out = {}
        for f in dataclasses.fields(Batch):
            values = [getattr(b, f.name) for b in items]
            out[f.name] = (
                torch.cat(values)
                if isinstance(values[0], torch.Tensor)
                else [v for vs in values for v in vs]
            )
        return Batch(**out)


class ClipDataset(Dataset):
    """Random clips of ``clip_frames`` frames from the episodes of a rendered dataset.

    Each item is a :class:`Batch` with ``B = 1``; use ``collate_fn=Batch.collate``. Item ``i``
    takes episode ``i % num_episodes`` and a random start (and optional palindrome pivot) drawn
    from ``torch``'s global generator, which DataLoader seeds per worker.

    Args:
        root: directory written by ``reverie render``.
        clip_frames: frames per clip (>= 1); every episode must be at least this long.
        palindrome: probability of palindrome augmentation (RELIC §3.4), in [0, 1].
        clips_per_episode: items per episode per epoch.
        resolution: expected frame side in pixels; ``None`` accepts the dataset's.
        cache_episodes: decoded episodes kept in memory (LRU).

    Raises:
        FileNotFoundError: no manifest under ``root``.
        ValueError: empty dataset, episodes shorter than ``clip_frames``, mixed or unexpected
            resolution, bad arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        clip_frames: int,
        *,
        palindrome: float = 0.0,
        clips_per_episode: int = 1,
        resolution: int | None = None,
        cache_episodes: int = 64,
    ) -> None:
        if clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
        if not 0.0 <= palindrome <= 1.0:
            raise ValueError(f"palindrome probability must be in [0, 1], got {palindrome}")
        if clips_per_episode < 1:
            raise ValueError(f"clips_per_episode must be >= 1, got {clips_per_episode}")
        self.root = Path(root)
        self.rows = read_manifest(self.root)
        if not self.rows:
            raise ValueError(f"dataset {self.root} lists no episodes")
        sizes = {(r["height"], r["width"]) for r in self.rows}
        if len(sizes) != 1:
            raise ValueError(f"dataset {self.root} mixes resolutions {sorted(sizes)}")
        ((self.height, self.width),) = sizes
        if resolution is not None and (self.height, self.width) != (resolution, resolution):
            raise ValueError(
                f"dataset {self.root} is {self.height}x{self.width} but "
                f"{resolution}x{resolution} was expected"
            )
        short = [r["id"] for r in self.rows if r["frames"] < clip_frames]
        if short:
            raise ValueError(
                f"episodes {short[:5]} of {self.root} are shorter than clip_frames={clip_frames}"
            )
        self.clip_frames, self.palindrome = clip_frames, palindrome
        self.clips_per_episode = clips_per_episode
        self._load = functools.lru_cache(maxsize=cache_episodes)(self._load_episode)

    def __len__(self) -> int:
        return len(self.rows) * self.clips_per_episode

    def _load_episode(self, eid: str) -> Episode:
        ep = read_episode(self.root / "episodes" / eid)
        if ep.resolution != (self.height, self.width):
            raise ValueError(
                f"{self.root / 'episodes' / eid / 'video.mp4'} is "
                f"{ep.resolution}, the manifest says {(self.height, self.width)}"
            )
        return ep

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        row = self.rows[index % len(self.rows)]
        ep = self._load(row["id"])
        T, n = self.clip_frames, ep.num_frames
        start = int(torch.randint(0, n - T + 1, ()).item())
        idx = np.arange(start, start + T)
        pivot = T
        actions = ep.actions[idx]
        if self.palindrome > 0 and T > 2 and torch.rand(()).item() < self.palindrome:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            pivot = sample_pivot(T, rng)
            idx = start + palindrome_indices(T, pivot)
            # Re-annotate the re-ordered poses with the episode's scale (the reversed half
            # moves backwards); the first action keeps the true motion into the first frame.
            first = actions[0]
            actions, _ = poses_to_actions(ep.R[idx], ep.P[idx], scale=ep.action_scale)
            actions[0] = first
        frames = torch.from_numpy(ep.frames[idx]).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        return Batch(
            frames=(frames.float() / 127.5 - 1.0)[None],
            R=torch.from_numpy(ep.R[idx]).float()[None],
            P=torch.from_numpy(ep.P[idx]).float()[None],
            actions=torch.from_numpy(np.ascontiguousarray(actions)).float()[None],
            action_scale=torch.tensor([ep.action_scale], dtype=torch.float32),
            K=torch.from_numpy(ep.K).float()[None],
            start=torch.tensor([start]),
            pivot=torch.tensor([pivot]),
            caption=[ep.caption],
            episode=[row["id"]],
        )
