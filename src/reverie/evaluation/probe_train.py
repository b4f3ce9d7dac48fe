"""`reverie eval train-probe`: train and validate the pose probe (:mod:`reverie.evaluation.probe`).

Protocol:

1. Read the episodes of a ``reverie render`` dataset of *training* scenes; split them by
   episode into train / val (``val_fraction``, seeded).
2. Train on random frame pairs ``(t, t + stride)`` of the train episodes (each pair shown
   reversed with probability 1/2), smooth-L1 on standardised targets, AdamW with a cosine
   learning-rate decay.
3. Validate the *trajectory* the probe recovers (chained pairs, Sim(3) Umeyama, RPE;
   :mod:`reverie.evaluation.trajectory_error`):

   - on the val episodes of the training dataset (same scene distribution, unseen episodes);
   - on ground-truth renders of held-out scenes (:mod:`reverie.evaluation.heldout`; ``mixed``
     camera paths), the setting ``reverie eval actions`` uses: this is the probe's error
     floor, the RPE a model that renders the commanded path perfectly would get;
   - beside them, a ``static`` reference (the probe applied to the first frame repeated): what
     a model that ignores the actions gets.

The probe (``probe.safetensors`` + ``probe.json`` with the config and these numbers) is written
to ``--out``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from reverie.evaluation.probe import (
    PoseProbe,
    PoseProbeConfig,
    recover_trajectory,
    relative_pose_targets,
    save_probe,
    to_input,
)
from reverie.evaluation.trajectory_error import mean_rpe, rpe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeTrainConfig:
    """Settings of probe training.

    Attributes:
        steps: optimiser steps.
        batch: frame pairs per step.
        lr: peak AdamW learning rate (cosine decay to 0, 50-step linear warm-up).
        weight_decay: AdamW weight decay.
        stride: video frames between the two frames of a pair.
        val_fraction: fraction of episodes held out for validation.
        max_episodes: read at most this many episodes (0 = all).
        heldout_scenes: held-out scenes rendered for validation (0 = skip).
        heldout_seconds: length of each held-out validation path, seconds.
        seed: seed of the split, the initialisation and the batches.
    """

    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    stride: int = 4
    val_fraction: float = 0.1
    max_episodes: int = 0
    heldout_scenes: int = 8
    heldout_seconds: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.stride < 1:
            raise ValueError("--steps, --batch and --stride must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.heldout_scenes < 0 or self.max_episodes < 0:
            raise ValueError("--heldout-scenes and --max-episodes must be >= 0")


@dataclass(frozen=True, eq=False)
class PoseClip:
    """Frames and poses of one episode. Shapes: frames (T, H, W, 3) uint8, R (T, 3, 3), P (T, 3)."""

    frames: np.ndarray
    R: np.ndarray
    P: np.ndarray


def load_clips(data_dir: str | Path, max_episodes: int = 0) -> tuple[list[PoseClip], list[dict]]:
    """Episodes of a ``reverie render`` dataset as :class:`PoseClip` s, with their manifest rows.

    Raises:
        FileNotFoundError: no dataset (manifest) at ``data_dir``.
    """
    from reverie.data import read_episode, read_manifest

    rows = read_manifest(data_dir)
    if max_episodes:
        rows = rows[:max_episodes]
    clips = []
    for row in rows:
        ep = read_episode(Path(data_dir) / "episodes" / row["id"])
        clips.append(PoseClip(ep.frames, ep.R, ep.P))
    return clips, rows


def target_stats(clips: list[PoseClip], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ``(6,)`` of the targets of all pairs, both directions (mean ~ 0)."""
    t = []
    for c in clips:
        i = np.arange(len(c.P) - stride)
        t += [relative_pose_targets(c.R, c.P, i, i + stride)]
        t += [relative_pose_targets(c.R, c.P, i + stride, i)]
    t = np.concatenate(t)
    return t.mean(axis=0), t.std(axis=0) + 1e-6


def sample_batch(
    clips: list[PoseClip], batch: int, stride: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random pairs: frames a, b ``(batch, H, W, 3)`` uint8 and targets ``(batch, 6)``."""
    a, b, y = [], [], []
    for k in rng.integers(len(clips), size=batch):
        c = clips[k]
        i = int(rng.integers(len(c.P) - stride))
        j = i + stride
        if rng.random() < 0.5:
            i, j = j, i
        a.append(c.frames[i])
        b.append(c.frames[j])
        y.append(relative_pose_targets(c.R, c.P, np.array([i]), np.array([j]))[0])
    return np.stack(a), np.stack(b), np.stack(y)


def trajectory_rpe(probe: PoseProbe, clip: PoseClip) -> tuple[dict, dict]:
    """RPE of the probe's trajectory of ``clip`` and of the ``static`` reference (first frame
    repeated), both against the clip's poses at every ``stride``-th frame."""
    s = probe.config.stride
    n = (len(clip.frames) - 1) // s + 1
    R, P = clip.R[::s][:n], clip.P[::s][:n]
    est = recover_trajectory(probe, clip.frames)
    still = recover_trajectory(probe, np.broadcast_to(clip.frames[:1], clip.frames.shape))
    return rpe(R, P, *est), rpe(R, P, *still)


def heldout_clips(scenes: int, seconds: float, fps: int, resolution: int) -> list[PoseClip]:
    """Ground-truth renders of held-out scenes ``0..scenes-1`` along ``mixed`` paths."""
    from reverie.evaluation.heldout import heldout_trajectory_seed, render_heldout
    from reverie.evaluation.heldout import sample_heldout_path as sample

    out = []
    for i in range(scenes):
        spec, traj = sample(i, "mixed", seconds, fps)
        gt = render_heldout(
            i,
            spec,
            traj.R,
            traj.P,
            trajectory_seed=heldout_trajectory_seed(i),
            resolution=resolution,
            fps=fps,
        )
        out.append(PoseClip(gt.frames, gt.R, gt.P))
    return out


def validate(probe: PoseProbe, clips: list[PoseClip]) -> dict:
    """Mean RPE of the probe (``probe``) and of the static reference (``static``) over clips."""
    rows = [trajectory_rpe(probe, c) for c in clips]
    return {
        "probe": mean_rpe([r[0] for r in rows]),
        "static": mean_rpe([r[1] for r in rows]),
        "episodes": [r[0] for r in rows],
    }


def train_probe(
    data_dir: str | Path, out: str | Path, cfg: ProbeTrainConfig, *, progress: bool = True
) -> dict:
    """Train a probe on ``data_dir``, validate it, save it to ``out``; returns the report.

    Raises:
        FileNotFoundError: no dataset at ``data_dir``.
        ValueError: fewer than 2 episodes, or episodes shorter than ``stride + 1`` frames.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    clips, rows = load_clips(data_dir, cfg.max_episodes)
    if len(clips) < 2:
        raise ValueError(f"{data_dir} has {len(clips)} episodes; need >= 2 (train + val)")
    if min(len(c.P) for c in clips) <= cfg.stride:
        raise ValueError(f"episodes must have more than stride = {cfg.stride} frames")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(clips))
    n_val = max(1, round(cfg.val_fraction * len(clips)))
    val = [clips[k] for k in order[:n_val]]
    train = [clips[k] for k in order[n_val:]]
    resolution = clips[0].frames.shape[1]
    fps = int(rows[0]["fps"])
    mean, std = target_stats(train, cfg.stride)
    probe_cfg = PoseProbeConfig(
        resolution=resolution,
        stride=cfg.stride,
        target_mean=tuple(float(v) for v in mean),
        target_std=tuple(float(v) for v in std),
    )
    torch.manual_seed(cfg.seed)
    probe = PoseProbe(probe_cfg)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(50, cfg.steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    probe.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="train probe", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        a, b, y = sample_batch(train, cfg.batch, cfg.stride, rng)
        target = (torch.from_numpy(y).float() - mean_t) / std_t  # (B, 6)
        loss = F.smooth_l1_loss(probe(to_input(a), to_input(b)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    probe.eval()
    train_s = time.perf_counter() - t_start
    report = {
        "data": str(data_dir),
        "train_config": asdict(cfg),
        "train_episodes": len(train),
        "val_episodes": len(val),
        "parameters": sum(p.numel() for p in probe.parameters()),
        "final_loss": float(np.mean(losses[-50:])),
        "train_s": train_s,
        "val": _strip(validate(probe, val)),
    }
    if cfg.heldout_scenes:
        from reverie.evaluation.heldout import check_disjoint, heldout_scene_seed

        check_disjoint([heldout_scene_seed(i) for i in range(cfg.heldout_scenes)], data_dir)
        report["heldout_gt"] = _strip(
            validate(probe, heldout_clips(cfg.heldout_scenes, cfg.heldout_seconds, fps, resolution))
        )
        report["heldout_gt"]["scenes"] = cfg.heldout_scenes
        report["heldout_gt"]["seconds"] = cfg.heldout_seconds
    save_probe(probe, out, extra={"report": report})
    return report


def _strip(v: dict) -> dict:
    """Drop per-episode rows from a validation dict (kept small in the JSON)."""
    return {k: x for k, x in v.items() if k != "episodes"}


def format_report(report: dict) -> str:
    """Short text summary of a probe report."""
    lines = [f"probe: {report['parameters']} parameters, loss {report['final_loss']:.4f}"]
    for name in ("val", "heldout_gt"):
        if name in report:
            p, s = report[name]["probe"], report[name]["static"]
            lines.append(
                f"{name:<11} RPE trans {p['trans_rmse']:.4f} m, rot {p['rot_rmse']:.3f} deg "
                f"(static: {s['trans_rmse']:.4f} m, {s['rot_rmse']:.3f} deg; n={p['n']})"
            )
    return "\n".join(lines)
