"""Rendering throughput of the data pipeline (issue "Foundation and worlds": >= 500 frames/s at
64x64 with 2 workers on the 2-core machine).

Measures, in one run:
- ``renderer_fps``: MuJoCo frames per second of one :class:`SceneRenderer` (median over scenes),
- ``dataset[workers]``: frames per second of ``reverie render`` end to end (scene build,
  trajectory, rendering, H.264 encoding, atomic writes), for 1 and 2 worker processes, over
  the whole call (``fps``) and once the workers have started (``steady_fps``).

    python benchmarks/render_speed.py --out benchmarks/results/render_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from reverie.data.render_job import RenderConfig, render_dataset
from reverie.io import atomic_write_json
from reverie.runtime import setup_runtime
from reverie.worlds import sample_scene
from reverie.worlds.render import SceneRenderer
from reverie.worlds.trajectory import sample_trajectory


def renderer_fps(resolution: int, scenes: int, frames: int) -> list[float]:
    rates = []
    for seed in range(scenes):
        spec = sample_scene(seed)
        traj = sample_trajectory(spec, "random", seconds=frames / 16, fps=16, seed=seed)
        with SceneRenderer(spec, resolution, resolution) as r:
            r.render(traj.R[0], traj.P[0])  # warm-up
            t0 = time.perf_counter()
            for R, P in zip(traj.R, traj.P, strict=True):
                r.render(R, P)
            rates.append(len(traj.R) / (time.perf_counter() - t0))
    return rates


def dataset_fps(resolution: int, episodes: int, seconds: float, workers: int) -> dict:
    """End-to-end ``render_dataset`` throughput, with and without the workers' start-up.

    ``fps`` counts the whole call (process spawn and imports included); ``steady_fps`` counts
    the episodes finished after each worker's first one, over the time they took.
    """
    cfg = RenderConfig(
        episodes=episodes, seconds=seconds, resolution=resolution, seed=123, trajectory="mixed"
    )
    done: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = render_dataset(
            cfg,
            Path(tmp) / "ds",
            workers=workers,
            progress=False,
            on_episode=lambda row: done.append((time.perf_counter(), row["frames"])),
        )
        elapsed = time.perf_counter() - t0
    frames = sum(r["frames"] for r in rows)
    warm = done[workers - 1 :]
    steady = sum(n for _, n in warm[1:]) / (warm[-1][0] - warm[0][0])
    return {
        "workers": workers,
        "episodes": episodes,
        "frames": frames,
        "seconds": round(elapsed, 2),
        "fps": round(frames / elapsed, 1),
        "first_episode_s": round(done[0][0] - t0, 2),
        "steady_fps": round(steady, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    setup_runtime(log_level="WARNING")
    rates = renderer_fps(args.resolution, scenes=6, frames=320)
    result = {
        "benchmark": "render_speed",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "resolution": args.resolution,
        "renderer_fps_median": round(statistics.median(rates), 1),
        "renderer_fps_per_scene": [round(r, 1) for r in rates],
        "dataset": [dataset_fps(args.resolution, args.episodes, args.seconds, w) for w in (1, 2)],
    }
    one, two = result["dataset"]
    result["speedup_2_workers"] = round(two["fps"] / one["fps"], 2)
    result["target_fps_2_workers"] = 500
    result["meets_target"] = bool(two["fps"] >= 500)
    result["meets_target_steady"] = bool(two["steady_fps"] >= 500)
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
