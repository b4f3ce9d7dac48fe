"""Datasets on disk (episodes, manifest, rendering jobs) and in PyTorch (clips, batches)."""

from reverie.data.dataset import Batch, ClipDataset
from reverie.data.episode import Episode, read_episode, write_episode
from reverie.data.render_job import RenderConfig, read_manifest, render_dataset

__all__ = [
    "Batch",
    "ClipDataset",
    "Episode",
    "RenderConfig",
    "read_episode",
    "read_manifest",
    "render_dataset",
    "write_episode",
]
