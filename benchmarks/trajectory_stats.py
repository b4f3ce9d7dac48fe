"""How much each trajectory family revisits earlier views, and how long a path takes to plan.

For ``--scenes`` procedural scenes (``sample_scene(seed)``, seeds 0..N-1) and each family, samples
a ``--seconds`` trajectory and reports the mean/min/max ``revisit_fraction`` (frames whose
viewpoint is within 0.5 m and 20 deg of a frame >= 3 s earlier that the camera had left) and
the median generation time.

    python benchmarks/trajectory_stats.py --out benchmarks/results/trajectory_stats.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date

from reverie.io import atomic_write_json
from reverie.worlds import sample_scene
from reverie.worlds.revisit import revisit_stats
from reverie.worlds.trajectory import sample_trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    families = {}
    for family in ("revisit", "random", "mixed"):
        fractions, events, times = [], [], []
        for seed in range(args.scenes):
            spec = sample_scene(seed)
            t0 = time.perf_counter()
            traj = sample_trajectory(spec, family, seconds=args.seconds, fps=args.fps, seed=seed)
            times.append(time.perf_counter() - t0)
            stats = revisit_stats(traj.R, traj.P, args.fps)
            fractions.append(stats.revisit_fraction)
            events.append(stats.num_revisit_events)
        families[family] = {
            "revisit_fraction_mean": round(statistics.mean(fractions), 3),
            "revisit_fraction_min": round(min(fractions), 3),
            "revisit_fraction_max": round(max(fractions), 3),
            "revisit_events_mean": round(statistics.mean(events), 2),
            "generation_s_median": round(statistics.median(times), 3),
        }
    result = {
        "benchmark": "trajectory_stats",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "scenes": args.scenes,
        "seconds": args.seconds,
        "fps": args.fps,
        "families": families,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
