"""Cached latents on disk: the resumable shard store, and latent clips for the DiT stages.

``reverie encode`` (``training/encode.py``) and the ``ode`` stage write the same format::

    LATDIR/index.json                 kind, settings, planned shards, completed shards (+ stats)
    LATDIR/shards/shard_00000.safetensors
        "<key>/<name>" tensors of each item (``latents``, ``actions``, ``R``, ``P``, ...)
        metadata "items": JSON list, one dict per item (key, episode, caption, ...)

A shard is written under a temporary name, renamed into place, and only then listed in
``index.json`` (itself replaced atomically), so an interrupted run never lists a half shard and
re-running the same command skips the listed ones (:class:`ShardStore`).

:class:`LatentClipDataset` cuts random clips of ``T`` latent frames from the encoded windows,
with palindrome augmentation in latent space (RELIC arXiv 2512.04040 §3.4) and poses made
relative to the clip's first frame (as inference integrates them from actions, RELIC §4.1.2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from reverie.camera import poses_to_actions
from reverie.data.transforms import palindrome_indices, sample_pivot
from reverie.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
SHARDS_DIR = "shards"
FORMAT_VERSION = 1
FILE_MODE = 0o644
# Video frames per latent frame after the first (Wan VAE, docs/conventions.md).
TEMPORAL_FACTOR = 4


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard_00012.safetensors``)."""
    return f"shard_{index:05d}.safetensors"


class ShardStore:
    """A directory of resumable safetensors shards with an atomic ``index.json``.

    Args:
        root: output directory (created).
        kind: what the shards hold (``"latents"``, ``"ode"``); must match an existing index.
        settings: JSON-ready values that must match an existing index to resume (e.g. the
            VAE and clip length); other values belong in :meth:`write`'s ``info``.
        num_shards: shards the full run will write (may grow when re-run on more data).

    Raises:
        ValueError: ``root`` holds an index of another kind or other settings (naming them).
    """

    def __init__(self, root: str | Path, kind: str, settings: dict[str, Any], num_shards: int):
        self.root = Path(root)
        self.settings = json.loads(json.dumps(settings))  # JSON-normalised for comparison
        path = self.root / INDEX_NAME
        if path.is_file():
            self.index = json.loads(path.read_text())
            if self.index.get("kind") != kind:
                raise ValueError(f"{path} holds {self.index.get('kind')!r} shards, not {kind!r}")
            diffs = [
                f"{k}: {self.index['settings'].get(k)!r} there, {v!r} now"
                for k, v in self.settings.items()
                if self.index["settings"].get(k) != v
            ]
            if diffs:
                raise ValueError(
                    f"{self.root} was written with other settings ({'; '.join(diffs)}); "
                    "use another output directory"
                )
        else:
            self.index = {"kind": kind, "version": FORMAT_VERSION, "settings": self.settings}
            self.index["shards"] = {}
        self.index["num_shards"] = num_shards
        (self.root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def done(self) -> dict[str, dict[str, Any]]:
        """Completed shards: file name -> its ``info`` (item count, statistics, ...)."""
        return self.index["shards"]

    def is_done(self, index: int) -> bool:
        """Whether shard ``index`` is listed as complete."""
        return shard_name(index) in self.done

    @property
    def complete(self) -> bool:
        """All ``num_shards`` shards are listed."""
        return all(self.is_done(i) for i in range(self.index["num_shards"]))

    def write(
        self,
        index: int,
        tensors: dict[str, torch.Tensor],
        items: list[dict[str, Any]],
        info: dict[str, Any] | None = None,
    ) -> None:
        """Write shard ``index`` atomically, then list it (with ``info``) in the index.

        Shapes: ``tensors`` keyed ``"<item key>/<name>"``, any shapes (stored contiguous, CPU).
        """
        name = shard_name(index)
        cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(self.root / SHARDS_DIR / name) as tmp:
            save_file(cpu, str(tmp), metadata={"items": json.dumps(items)})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        self.done[name] = {"items": len(items), **(info or {})}
        self.save()

    def update(self, **fields: Any) -> None:
        """Set top-level index fields (e.g. the latent statistics once complete) and save."""
        self.index.update(fields)
        self.save()

    def save(self) -> None:
        """Rewrite ``index.json`` atomically."""
        atomic_write_json(self.root / INDEX_NAME, self.index)
        os.chmod(self.root / INDEX_NAME, FILE_MODE)


def read_index(root: str | Path, kind: str) -> dict[str, Any]:
    """The ``index.json`` of a shard directory.

    Raises:
        FileNotFoundError: no index under ``root``.
        ValueError: another kind of shards, or no completed shard.
    """
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX_NAME} under {root} (run `reverie encode` first?)")
    index = json.loads(path.read_text())
    if index.get("kind") != kind:
        raise ValueError(f"{path} holds {index.get('kind')!r} shards, not {kind!r}")
    if not index["shards"]:
        raise ValueError(f"{root} has no completed shard yet")
    if len(index["shards"]) < index["num_shards"]:
        logger.warning("%s: %d of %d shards done", root, len(index["shards"]), index["num_shards"])
    return index


def read_items(root: str | Path, index: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """``(shard path, item metadata)`` of every item of the completed shards, in shard order."""
    out = []
    for name in sorted(index["shards"]):
        path = Path(root) / SHARDS_DIR / name
        with safe_open(str(path), framework="pt") as f:
            items = json.loads(f.metadata()["items"])
        out += [(path, item) for item in items]
    return out


def load_item(path: Path, key: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors ``<key>/<name>`` of one item of a shard, by ``name``."""
    with safe_open(str(path), framework="pt") as f:
        return {n: f.get_tensor(f"{key}/{n}") for n in names}


class TensorBatch:
    """Mixin for batch dataclasses of tensors and string lists: ``len``, ``to``, ``collate``."""

    batch_field: ClassVar[str]

    def __len__(self) -> int:
        return getattr(self, self.batch_field).shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Self:
        """Move tensors to ``device``; floating tensors are cast to ``dtype`` when given."""

        def move(x: Any) -> Any:
            if not isinstance(x, torch.Tensor):
                return x
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device)

        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return type(self)(**{f.name: move(getattr(self, f.name)) for f in fields})

    @classmethod
    def collate(cls, items: list[Self]) -> Self:
        """Concatenate batches along ``B`` (a DataLoader ``collate_fn``)."""
        out = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            values = [getattr(b, f.name) for b in items]
            out[f.name] = (
                torch.cat(values)
                if isinstance(values[0], torch.Tensor)
                else [v for vs in values for v in vs]
            )
        return cls(**out)


@dataclass
class LatentClip(TensorBatch):
    """A batch of latent clips with their per-video-frame conditioning (docs/conventions.md).

    Shapes:
        latents: ``(B, T, C, h, w)`` float32, normalised by the dataset's statistics.
        actions: ``(B, 1 + 4 (T - 1), 13)`` float32; ``actions[:, 0]`` is the motion into the
            clip's first frame.
        R: ``(B, 1 + 4 (T - 1), 3, 3)`` world-to-camera, P: ``(B, 1 + 4 (T - 1), 3)`` metres,
            relative to the clip's first frame (``R[:, 0] = I``, ``P[:, 0] = 0``) by default.
        action_scale: ``(B,)`` metres per frame (the episode's d̄).
        start: ``(B,)`` int64 first latent frame of the clip in its window.
        pivot: ``(B,)`` int64 palindrome pivot in latent frames (``T`` when not applied).
        caption, episode: ``B`` strings each.
    """

    latents: torch.Tensor
    actions: torch.Tensor
    R: torch.Tensor
    P: torch.Tensor
    action_scale: torch.Tensor
    start: torch.Tensor
    pivot: torch.Tensor
    caption: list[str]
    episode: list[str]

    batch_field: ClassVar[str] = "latents"


def video_frames(num_latent_frames: int) -> int:
    """Video frames of conditioning of a clip starting at latent frame 0: ``1 + 4 (T - 1)``."""
    return 1 + TEMPORAL_FACTOR * (num_latent_frames - 1)


def relative_to_first(R: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-express poses in the frame of the first camera: ``R_t R_0^T``, ``R_0 (P_t - P_0)``.

    Inference integrates poses from actions starting at the identity at the origin
    (``reverie.camera.actions_to_poses``, RELIC §4.1.2), so training poses start there too.
    Camera coordinates of every world point are unchanged (a rigid change of world frame).

    Shapes: R ``(T, 3, 3)``, P ``(T, 3)`` float64 -> same.
    """
    return R @ R[0].T, (P - P[0]) @ R[0].T


class LatentClipDataset(Dataset):
    """Random clips of ``clip_latent_frames`` latent frames from a ``reverie encode`` directory.

    Item ``i`` takes window ``i % num_windows`` and a random start **in latent frames** (and an
    optional palindrome pivot) from torch's global generator (seeded per sample by
    :func:`reverie.training.make_loader`); use ``collate_fn=LatentClip.collate``.

    Latent frame ``j`` of a window ends at video frame ``4 j`` of the window (frame 0 alone,
    then groups of 4), so a clip of latent frames ``s .. s+T-1`` carries video frames
    ``4s .. 4(s+T-1)``: ``1 + 4 (T - 1)`` frames of actions and poses. For ``s > 0`` the
    first latent frame encodes 4 video frames (with the causal VAE's context before them),
    not one frame alone as at inference: an approximation, exact for ``s = 0``.

    Palindrome (RELIC §3.4) in latent space: pivot ``p ~ U{ceil((T+1)/2)..T}``, latent order
    ``0..p-1, p-2, ...`` (``palindrome_indices``); the video frames follow the same palindrome
    with pivot ``1 + 4 (p - 1)``, and actions are recomputed from the re-ordered poses with
    the episode's scale (``poses_to_actions(..., scale=d̄)``), keeping the first action, as
    ``ClipDataset`` does in pixel space. The causal VAE encoded the window forwards, so a
    reversed latent is the forward encoding of its 4 frames, not the encoding of the reversed
    video: also an approximation (the content matches, the intra-group motion runs forwards).

    Args:
        root: directory written by ``reverie encode``.
        clip_latent_frames: ``T`` (>= 1); every window must be at least this long.
        palindrome: probability of palindrome augmentation, in [0, 1].
        clips_per_window: items per window per epoch.
        normalize: standardise latents with the per-channel mean/std measured by encode
            (``index.json``); False returns the VAE's latents as stored.
        resolution: expected pixel side of the encoded videos; None accepts any.
        relative_poses: express poses relative to the clip's first frame
            (:func:`relative_to_first`).
        cache_windows: windows kept in memory (LRU).

    Raises:
        FileNotFoundError: no index. ValueError: no shard, statistics missing while
        ``normalize``, other resolution, windows shorter than the clip, bad arguments.
    """

    TENSORS = ("latents", "actions", "R", "P")

    def __init__(
        self,
        root: str | os.PathLike,
        clip_latent_frames: int,
        *,
        palindrome: float = 0.0,
        clips_per_window: int = 1,
        normalize: bool = True,
        resolution: int | None = None,
        relative_poses: bool = True,
        cache_windows: int = 64,
    ) -> None:
        if clip_latent_frames < 1 or clips_per_window < 1:
            raise ValueError("clip_latent_frames and clips_per_window must be >= 1")
        if not 0.0 <= palindrome <= 1.0:
            raise ValueError(f"palindrome probability must be in [0, 1], got {palindrome}")
        self.root = Path(root)
        self.index = read_index(self.root, "latents")
        size = tuple(self.index["settings"]["resolution"])
        if resolution is not None and size != (resolution, resolution):
            raise ValueError(
                f"latents {self.root} were encoded from {size[0]}x{size[1]} videos but "
                f"{resolution}x{resolution} was expected (re-encode or fix data.resolution)"
            )
        self.items = read_items(self.root, self.index)
        short = [m["key"] for _, m in self.items if m["latent_frames"] < clip_latent_frames]
        if short:
            raise ValueError(
                f"windows {short[:5]} of {self.root} have fewer than "
                f"clip_latent_frames={clip_latent_frames} latent frames"
            )
        self.mean = self.std = None
        if normalize:
            if "latent_mean" not in self.index:
                raise ValueError(f"{self.root} has no latent statistics (encode not finished)")
            shape = (1, -1, 1, 1)  # broadcast over (T, C, h, w)
            self.mean = torch.tensor(self.index["latent_mean"]).view(shape)
            self.std = torch.tensor(self.index["latent_std"]).view(shape)
        self.clip_latent_frames, self.palindrome = clip_latent_frames, palindrome
        self.clips_per_window, self.relative_poses = clips_per_window, relative_poses
        self._load = functools.lru_cache(maxsize=cache_windows)(self._load_window)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent frame."""
        return tuple(self.index["settings"]["latent_shape"])

    def __len__(self) -> int:
        return len(self.items) * self.clips_per_window

    def _load_window(self, i: int) -> dict[str, torch.Tensor]:
        path, meta = self.items[i]
        return load_item(path, meta["key"], self.TENSORS)

    def __getitem__(self, index: int) -> LatentClip:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        window = index % len(self.items)
        meta = self.items[window][1]
        data = self._load(window)
        T = self.clip_latent_frames
        start = int(torch.randint(0, meta["latent_frames"] - T + 1, ()).item())
        lat_idx = np.arange(start, start + T)
        vid_idx = np.arange(TEMPORAL_FACTOR * start, TEMPORAL_FACTOR * (start + T - 1) + 1)
        R, P = data["R"].numpy()[vid_idx], data["P"].numpy()[vid_idx]  # (Tv, 3, 3), (Tv, 3)
        actions = data["actions"].numpy()[vid_idx]  # (Tv, 13)
        pivot = T
        if self.palindrome > 0 and T > 2 and torch.rand(()).item() < self.palindrome:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            pivot = sample_pivot(T, rng)
            lat_idx = start + palindrome_indices(T, pivot)
            order = palindrome_indices(len(vid_idx), video_frames(pivot))  # (Tv,)
            R, P = R[order], P[order]
            first = actions[0]
            actions, _ = poses_to_actions(R, P, scale=meta["action_scale"])
            actions[0] = first
        if self.relative_poses:
            R, P = relative_to_first(R.astype(np.float64), P.astype(np.float64))
        latents = data["latents"][torch.from_numpy(lat_idx)].float()  # (T, C, h, w)
        if self.mean is not None:
            latents = (latents - self.mean) / self.std
        return LatentClip(
            latents=latents[None],
            actions=torch.from_numpy(np.ascontiguousarray(actions)).float()[None],
            R=torch.from_numpy(np.ascontiguousarray(R)).float()[None],
            P=torch.from_numpy(np.ascontiguousarray(P)).float()[None],
            action_scale=torch.tensor([meta["action_scale"]], dtype=torch.float32),
            start=torch.tensor([start]),
            pivot=torch.tensor([pivot]),
            caption=[meta["caption"]],
            episode=[meta["episode"]],
        )
