"""``reverie encode``: cache VAE latents of a rendered dataset as resumable safetensors shards.

    reverie encode --data /tmp/tinydata --vae runs/tiny/vae --out /tmp/tinylat
    reverie encode --data /tmp/tinydata --vae runs/tiny/vae --out /tmp/tinylat --clip-frames 81

**Windows.** Each episode of ``n`` frames is cut into ``floor(n / N)`` consecutive,
non-overlapping windows of ``N = --clip-frames`` frames (``N = 1 + 4k``; default: the longest
``1 + 4k`` that fits the shortest episode, i.e. one window per episode), starting at frame 0;
the ``n mod N`` frames after the last window are dropped. Every window is encoded on its own
(its first frame alone, then groups of 4: ``1 + k`` latent frames), so a window's latent frame
``j`` ends at its video frame ``4 j``.

**Shards** (format in ``training/latents.py``): shard ``s`` holds the windows of episodes
``[s E, (s + 1) E)`` (``E = --episodes-per-shard``) in manifest order, per window:

    <key>/latents   (T_lat, C, h, w) float32, the VAE's latents (``VideoVAE.encode``, mean)
    <key>/actions   (T_video, 13) float32 per video frame (as rendered)
    <key>/R         (T_video, 3, 3) float64 world-to-camera;  <key>/P  (T_video, 3) float64
    metadata item   key, episode, window, start_frame, latent_frames, video_frames,
                    action_scale, caption, fps

``index.json`` lists the completed shards with per-channel latent moments; once all are done
it also holds ``latent_mean``/``latent_std`` (C floats each), with which
:class:`reverie.training.latents.LatentClipDataset` standardises latents for the DiT (the
``tiny`` VAE's own normalisation is the identity). Re-running the same command skips listed
shards; a different VAE or clip length in the same ``--out`` is an error.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from reverie.data import read_episode, read_manifest
from reverie.tokenizer import VAEConfig, VideoVAE, get_vae_config, load_vae, num_latent_frames
from reverie.training.checkpoint import latest_checkpoint, read_checkpoint_config
from reverie.training.latents import ShardStore, shard_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedVAE:
    """A tokenizer ready for encoding and what is known about it.

    Attributes:
        vae: the ``VideoVAE`` (eval mode).
        source: the resolved weights file.
        resolution: pixel side it was trained on (from a ``vae`` stage config), or None.
    """

    vae: VideoVAE
    source: Path
    resolution: int | None


def load_trained_vae(path: str | Path, *, ema: bool = True) -> LoadedVAE:
    """Load a tokenizer from a ``save_vae`` directory, a ``vae`` training checkpoint
    (``.../checkpoints/step_N``) or a ``vae`` run directory (its newest checkpoint).

    Training checkpoints use ``vae.ema.safetensors`` when present and ``ema`` is True.

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
        ValueError: a checkpoint of another stage, or weights that do not fit the config.
    """
    path = Path(path)
    if (path / "vae_config.json").is_file():
        return LoadedVAE(load_vae(path).eval(), path / "vae.safetensors", None)
    ckpt = latest_checkpoint(path) if (path / "checkpoints").is_dir() else path
    if ckpt is None or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is neither a save_vae directory, a vae checkpoint nor a vae run directory"
        )
    stored = read_checkpoint_config(ckpt)
    if stored["stage"] != "vae":
        raise ValueError(f"{ckpt} is a checkpoint of stage {stored['stage']!r}, not 'vae'")
    from reverie.training.stages.vae import vae_config_of

    preset, resolution = vae_config_of(stored["config"])
    weights = ckpt / "vae.ema.safetensors"
    if not (ema and weights.is_file()):
        weights = ckpt / "vae.safetensors"
    vae = VideoVAE(get_vae_config(preset))
    try:
        vae.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise ValueError(f"{weights} does not fit the {preset!r} VAE preset: {e}") from e
    logger.info("loaded VAE %s (%s preset, trained at %dpx)", weights, preset, resolution)
    return LoadedVAE(vae.eval(), weights, resolution)


def dataset_resolution(data: str | Path, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """``(height, width)`` shared by the manifest ``rows`` of dataset ``data``.

    Raises:
        ValueError: no rows, or rows of several resolutions.
    """
    if not rows:
        raise ValueError(f"dataset {data} lists no episodes")
    sizes = {(r["height"], r["width"]) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"dataset {data} mixes resolutions {sorted(sizes)}")
    ((height, width),) = sizes
    return height, width


def longest_clip(num_frames: int, temporal_factor: int = 4) -> int:
    """The longest ``1 + 4k`` frame count that fits ``num_frames`` (>= 1)."""
    return 1 + temporal_factor * ((num_frames - 1) // temporal_factor)


def plan_windows(rows: list[dict[str, Any]], clip_frames: int) -> dict[str, list[int]]:
    """Window start frames per episode id (module docstring).

    Raises:
        ValueError: ``clip_frames`` not ``1 + 4k``, or episodes shorter than it (named).
    """
    num_latent_frames(clip_frames)
    short = [r["id"] for r in rows if r["frames"] < clip_frames]
    if short:
        raise ValueError(f"episodes {short[:5]} are shorter than --clip-frames {clip_frames}")
    return {r["id"]: list(range(0, r["frames"] - clip_frames + 1, clip_frames)) for r in rows}


def vae_identity(config: VAEConfig, source: Path) -> dict[str, Any]:
    """What must match to resume: the VAE config and its weights file (path and size)."""
    stat = source.stat()
    return {"config": config.to_dict(), "weights": str(source.resolve()), "bytes": stat.st_size}


@torch.no_grad()
def encode_dataset(
    data: str | Path,
    vae_path: str | Path,
    out: str | Path,
    *,
    clip_frames: int | None = None,
    episodes_per_shard: int = 8,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every window of a rendered dataset into ``out`` (module docstring); resumable.

    ``precision="bf16"`` runs the encoder under bf16 autocast (on CPU ~3-4x faster: fp32
    ``Conv3d`` takes PyTorch's slow path there); latents are stored in float32 either way.

    Returns:
        ``index.json``'s content (with ``latent_mean``/``latent_std`` once complete).

    Raises:
        FileNotFoundError: no dataset manifest or no VAE at ``vae_path``.
        ValueError: bad sizes, mixed resolutions, a resolution the VAE was not trained at or not a
            multiple of its 8x downsampling, bad ``clip_frames``, short episodes, an ``out``
            written with other settings.
    """
    if episodes_per_shard < 1 or batch_size < 1:
        raise ValueError("--episodes-per-shard and --batch-size must be >= 1")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    rows = read_manifest(data)
    height, width = dataset_resolution(data, rows)
    loaded = load_trained_vae(vae_path)
    vae, factor = loaded.vae, loaded.vae.spatial_factor
    if loaded.resolution is not None and (height, width) != (loaded.resolution,) * 2:
        raise ValueError(
            f"dataset {data} is {height}x{width} but the VAE {loaded.source} was trained on "
            f"{loaded.resolution}x{loaded.resolution} frames"
        )
    if height % factor or width % factor:
        raise ValueError(f"dataset {data} is {height}x{width}, not a multiple of {factor}")
    if clip_frames is None:
        clip_frames = longest_clip(min(r["frames"] for r in rows))
    windows = plan_windows(rows, clip_frames)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = vae.to(device)
    groups = [rows[i : i + episodes_per_shard] for i in range(0, len(rows), episodes_per_shard)]
    settings = {
        "vae": vae_identity(vae.config, loaded.source),
        "clip_frames": clip_frames,
        "episodes_per_shard": episodes_per_shard,
        "resolution": [height, width],
        "latent_shape": [vae.latent_channels, height // factor, width // factor],
    }
    store = ShardStore(out, "latents", settings, len(groups))
    for s, group in enumerate(groups):
        info = store.done.get(shard_name(s))
        if info is not None and info["episodes"] != [r["id"] for r in group]:
            raise ValueError(f"{out}: shard {s} holds other episodes; use another --out")
    todo = [s for s in range(len(groups)) if not store.is_done(s)]
    total = sum(len(windows[r["id"]]) for s in todo for r in groups[s])
    bar = tqdm(total=total, desc="encode", unit="clip", disable=not progress, dynamic_ncols=True)
    with bar:
        for s in todo:
            tensors, items, moments = _encode_group(
                vae, device, data, groups[s], windows, clip_frames, batch_size, bar, precision
            )
            episodes = [r["id"] for r in groups[s]]
            store.write(s, tensors, items, {"episodes": episodes, "moments": moments})
    if store.complete and (todo or "latent_mean" not in store.index):  # over all shards
        mean, std = merge_moments([info["moments"] for info in store.done.values()])
        store.update(latent_mean=mean, latent_std=std)
    return store.index


def _encode_group(vae, device, data, group, windows, clip_frames, batch_size, bar, precision):
    """Encode the windows of one shard's episodes: ``(tensors, items, moments)``."""
    tensors: dict[str, torch.Tensor] = {}
    items: list[dict[str, Any]] = []
    latents_all = []
    for row in group:
        ep = read_episode(Path(data) / "episodes" / row["id"])
        starts = windows[row["id"]]
        for b in range(0, len(starts), batch_size):
            chunk = starts[b : b + batch_size]
            video = torch.stack(
                [torch.from_numpy(ep.frames[s : s + clip_frames]) for s in chunk]
            )  # (n, N, H, W, 3) uint8
            video = video.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (n, N, 3, H, W)
            device_type = torch.device(device).type
            with torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16"):
                latents = vae.encode(video.to(device)).float().cpu()
            latents_all.append(latents)  # (n, T_lat, C, h, w)
            for j, s in enumerate(chunk):
                key = f"{row['id']}-{s:06d}"
                frames = slice(s, s + clip_frames)
                tensors[f"{key}/latents"] = latents[j]
                tensors[f"{key}/actions"] = torch.from_numpy(ep.actions[frames]).float()
                tensors[f"{key}/R"] = torch.from_numpy(ep.R[frames]).double()
                tensors[f"{key}/P"] = torch.from_numpy(ep.P[frames]).double()
                items.append(
                    {
                        "key": key,
                        "episode": row["id"],
                        "window": b + j,
                        "start_frame": s,
                        "latent_frames": latents.shape[1],
                        "video_frames": clip_frames,
                        "action_scale": ep.action_scale,
                        "caption": ep.caption,
                        "fps": ep.fps,
                    }
                )
            bar.update(len(chunk))
    return tensors, items, channel_moments(torch.cat(latents_all))


def channel_moments(latents: torch.Tensor) -> dict[str, Any]:
    """Per-channel sums for streaming mean/std: ``{"sum", "sumsq", "count"}`` (float64).

    Shapes: latents ``(N, T, C, h, w)`` -> lists of ``C`` floats and an int count per channel.
    """
    x = latents.detach().double().transpose(0, 2).reshape(latents.shape[2], -1)  # (C, M)
    return {"sum": x.sum(1).tolist(), "sumsq": x.square().sum(1).tolist(), "count": x.shape[1]}


def merge_moments(moments: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-channel ``(mean, std)`` from :func:`channel_moments` of several shards.

    Raises:
        ValueError: no moments.
    """
    if not moments:
        raise ValueError("no statistics to merge")
    count = sum(m["count"] for m in moments)
    total = np.sum([m["sum"] for m in moments], axis=0)
    total_sq = np.sum([m["sumsq"] for m in moments], axis=0)
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    return mean.tolist(), [max(math.sqrt(v), 1e-6) for v in var]


def summary(index: dict[str, Any], out: str | Path) -> str:
    """One JSON line describing an encode directory (printed by the CLI)."""
    items = sum(info["items"] for info in index["shards"].values())
    return json.dumps(
        {
            "out": str(out),
            "shards": f"{len(index['shards'])}/{index['num_shards']}",
            "windows": items,
            "clip_frames": index["settings"]["clip_frames"],
            "latent_shape": index["settings"]["latent_shape"],
            "complete": "latent_mean" in index,
        }
    )
