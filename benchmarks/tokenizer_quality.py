"""Tokenizer reconstruction on held-out scenes: linear patch tokenizer vs trained Wan VAE.

Renders `--episodes` held-out scenes (scene seeds 1_000_000 + i, both scene families as
`sample_scene(..., "mixed")` draws them, a moving `random` camera path of `--seconds`), encodes
each whole clip (first frame alone, then groups of 4: Wan's causal layout) and decodes it, and
scores every frame against the ground truth: PSNR (dB) and SSIM (7x7 Gaussian window,
`reverie.evaluation.metrics`). Trivial references in the same table: per-frame mean colour and
block averages (an oracle low-pass at 8x8 and 4x4 pixels: what an 8x / 4x latent with one mean
colour per latent pixel would give). Decode time per block (one latent frame = 4 video frames,
batch 1, streaming) is the median over all blocks of all episodes.

    python benchmarks/tokenizer_quality.py --tokenizer linear16=runs/default/vae \
        --tokenizer wan-vae=<a save_vae dir> --out benchmarks/results/tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch

from reverie.engine.images import video_to_uint8
from reverie.evaluation.heldout import render_heldout, sample_heldout_path
from reverie.evaluation.metrics import frame_psnr, frame_ssim
from reverie.io import atomic_write_json
from reverie.runtime import setup_runtime
from reverie.tokenizer import load_vae


def block_mean(frames: np.ndarray, k: int) -> np.ndarray:
    """Shapes: `(T, H, W, 3)` uint8 -> same, each `k x k` block replaced by its mean colour."""
    t, h, w, c = frames.shape
    x = frames.reshape(t, h // k, k, w // k, k, c).astype(np.float64).mean(axis=(2, 4))
    return np.repeat(np.repeat(x, k, axis=1), k, axis=2).round().astype(np.uint8)


@torch.no_grad()
def roundtrip(vae, frames: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Encode the whole clip, decode it block by block; returns frames and ms per block."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, H, W)
    with torch.autocast("cpu", torch.bfloat16):  # as the engine runs the VAE on CPU
        latents = vae.encode(video[None].to(vae.dtype))  # (1, T_lat, C, h, w)
        stream, out, times = vae.start_decoding(), [], []
        for i in range(latents.shape[1]):
            t0 = time.perf_counter()
            out.append(stream.step(latents[:, i : i + 1])[0])
            times.append((time.perf_counter() - t0) * 1e3)
    return video_to_uint8(torch.cat(out)), times[1:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a save_vae directory to measure (repeatable)",
    )
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON output path")
    args = p.parse_args()
    setup_runtime(threads=args.threads)
    tokenizers = {}
    for item in args.tokenizer:
        name, _, path = item.partition("=")
        tokenizers[name] = load_vae(path).eval()
    scores: dict[str, dict[str, list]] = {}
    decode_ms: dict[str, list[float]] = {n: [] for n in tokenizers}
    kinds = []

    def add(name: str, rec: np.ndarray, gt: np.ndarray) -> None:
        s = scores.setdefault(name, {"psnr": [], "ssim": []})
        s["psnr"].extend(np.minimum(frame_psnr(rec, gt), 100.0).tolist())
        s["ssim"].extend(frame_ssim(rec, gt).tolist())

    for i in range(args.episodes):
        spec, traj = sample_heldout_path(i, "random", args.seconds, 16)
        g = render_heldout(
            i, spec, traj.R, traj.P, trajectory_seed=0, resolution=args.resolution, fps=16
        )
        n = 1 + 4 * ((len(g.frames) - 1) // 4)
        gt = g.frames[:n]
        kinds.append(g.scene_kind)
        mean = np.broadcast_to(
            gt.mean(axis=(1, 2), keepdims=True).round().astype(np.uint8), gt.shape
        )
        add("mean colour (per frame)", np.ascontiguousarray(mean), gt)
        add("8x8 block mean (oracle)", block_mean(gt, 8), gt)
        add("4x4 block mean (oracle)", block_mean(gt, 4), gt)
        for name, vae in tokenizers.items():
            rec, times = roundtrip(vae, gt)
            add(name, rec, gt)
            decode_ms[name].extend(times)
    rows = {}
    for name, s in scores.items():
        rows[name] = {
            "psnr_db": round(float(np.mean(s["psnr"])), 2),
            "ssim": round(float(np.mean(s["ssim"])), 4),
            "decode_ms_per_block": (
                round(statistics.median(decode_ms[name]), 3) if decode_ms.get(name) else None
            ),
        }
    result = {
        "benchmark": "tokenizer_quality",
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "episodes": args.episodes,
        "seconds": args.seconds,
        "scene_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        "tokenizers": {n: str(p) for n, p in (t.partition("=")[::2] for t in args.tokenizer)},
        "results": rows,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
