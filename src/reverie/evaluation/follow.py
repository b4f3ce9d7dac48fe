"""Following the start image and the actions: generated frames vs ground truth from frame 0.

The protocol behind `reverie eval follow` (RELIC arXiv 2512.04040 §5: a world model must keep
the start image and move it the way the camera moves):

    1. held-out scene i (scene seed 1_000_000 + i, never trained on), a moving `random` camera
       path of `seconds`, rendered ground truth `G` (T frames) and its actions (RELIC Alg. 1)
    2. session = model.start(G[0], caption, memory=policy, gamma from the path's d-bar)
    3. step block by block with the ground-truth actions: generated frames 1 .. T-1
    4. per-frame PSNR (dB) / SSIM (7x7 window) against G, next to, in the same table:
       - `tokenizer`: G encoded and decoded by the model's own tokenizer (the ceiling),
       - `repeat start`: G[0] for every frame (a model that ignores the actions),
       - `mean colour`: G[0]'s mean colour for every frame.

Reported per method: the first generated block (frames 1-4), the first second (frames 1-16)
and each later second, averaged over scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reverie.engine.images import video_to_uint8
from reverie.evaluation.heldout import gamma_for, render_heldout, sample_heldout_path
from reverie.evaluation.metrics import finite_mean, frame_psnr, frame_ssim

METHODS = ("model", "tokenizer", "repeat start", "mean colour")


@dataclass(frozen=True)
class FollowConfig:
    """Scenes (held-out indices `0..scenes-1`), seconds per path, memory policy, seed."""

    scenes: int = 8
    seconds: float = 4.0
    policy: str = "window"
    seed: int = 0
    family: str = "random"

    def __post_init__(self) -> None:
        if self.scenes < 1 or not self.seconds >= 1.0:
            raise ValueError("--scenes must be >= 1 and --seconds >= 1")


@torch.no_grad()
def tokenizer_roundtrip(model, frames: np.ndarray) -> np.ndarray:
    """Shapes: `(T, H, W, 3)` uint8, `T = 1 + 4k` -> same, through the model's tokenizer."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, H, W)
    vae = model.vae
    with model.vae_autocast():
        rec = vae.decode(vae.encode(video[None].to(vae.dtype)))[0]  # (T, 3, H, W)
    return video_to_uint8(rec)


def follow_episode(model, index: int, cfg: FollowConfig) -> dict[str, np.ndarray]:
    """Steps 1-4 for one scene: `{method: {"psnr": (T-1,), "ssim": (T-1,)}}` over frames 1..T-1."""
    fps = model.fps
    spec, traj = sample_heldout_path(index, cfg.family, cfg.seconds, fps)
    g = render_heldout(
        index, spec, traj.R, traj.P, trajectory_seed=0, resolution=model.resolution, fps=fps
    )
    fs = model.frames_per_step
    n = 1 + fs * ((len(g.frames) - 1) // fs)
    gt = g.frames[:n]
    session = model.start(
        gt[0], g.caption, memory=cfg.policy, gamma=gamma_for(model, g.action_scale), seed=cfg.seed
    )
    gen = np.concatenate([session.step(g.actions[j : j + fs]) for j in range(1, n, fs)])
    session.close()
    start = np.broadcast_to(gt[:1], gt.shape)
    mean = np.broadcast_to(
        gt[:1].mean(axis=(1, 2), keepdims=True).round().astype(np.uint8), gt.shape
    )
    preds = {
        "model": gen,
        "tokenizer": tokenizer_roundtrip(model, gt)[1:],
        "repeat start": np.ascontiguousarray(start[1:]),
        "mean colour": np.ascontiguousarray(mean[1:]),
    }
    return {
        k: {"psnr": frame_psnr(v, gt[1:]), "ssim": frame_ssim(v, gt[1:])} for k, v in preds.items()
    }


def run_follow(model, cfg: FollowConfig, *, progress: bool = True) -> dict:
    """All scenes; returns the JSON-ready result (module docstring)."""
    from tqdm.auto import tqdm

    per = [
        follow_episode(model, i, cfg)
        for i in tqdm(range(cfg.scenes), desc="follow", disable=not progress)
    ]
    fps, fs = model.fps, model.frames_per_step
    frames = len(per[0]["model"]["psnr"])
    spans = {"first block": (0, fs), "first second": (0, fps)}
    for s in range(1, int(frames // fps)):
        spans[f"second {s + 1}"] = (s * fps, (s + 1) * fps)
    table = {}
    for m in METHODS:
        row = {}
        for name, (a, b) in spans.items():
            row[name] = {
                "psnr_db": round(finite_mean(np.concatenate([e[m]["psnr"][a:b] for e in per])), 2),
                "ssim": round(float(np.mean(np.concatenate([e[m]["ssim"][a:b] for e in per]))), 4),
            }
        table[m] = row
    return {
        "benchmark": "follow",
        "config": cfg.__dict__,
        "frames_per_scene": frames + 1,
        "spans": {k: [a + 1, b] for k, (a, b) in spans.items()},
        "results": table,
    }


def format_table(result: dict) -> str:
    """Markdown table: PSNR / SSIM per method and span."""
    spans = list(result["spans"])
    lines = ["| method | " + " | ".join(spans) + " |", "|---" * (len(spans) + 1) + "|"]
    for m, row in result["results"].items():
        cells = [f"{row[s]['psnr_db']:.2f} / {row[s]['ssim']:.3f}" for s in spans]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
