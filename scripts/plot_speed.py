"""Plot step time and cache tokens against stream time, one line per memory policy.

Reads the JSON of `reverie eval speed` (its per-policy ``curve``: one sample about every second
of video with the step's wall time and the tokens the policy holds) and writes a two-panel PNG:

    python scripts/plot_speed.py benchmarks/results/speed_10min.json \
        --out docs/images/speed_long.png

Step times are shown as a running median over ``--smooth`` samples (single steps are noisy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from plot_revisit import STYLE


def running_median(values: np.ndarray, width: int) -> np.ndarray:
    """Median of each value's trailing window of ``width`` samples (shorter at the start)."""
    return np.array([np.median(values[max(0, i - width + 1) : i + 1]) for i in range(len(values))])


def plot(result: dict, out: Path, smooth: int = 15) -> None:
    """Write the figure of a speed ``result`` to ``out`` (PNG, 150 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
    for name, pol in result["policies"].items():
        curve = pol["curve"]
        t = np.array([c["t_s"] for c in curve]) / 60
        ms = 1e3 * np.array([c["latency_s"] for c in curve])
        tokens = np.array([c["cache_tokens"] for c in curve])
        color, _ = STYLE.get(name, (None, "x"))
        label = name + (" (stopped early)" if pol.get("stopped_early") else "")
        top.plot(t, running_median(ms, smooth), color=color, label=label)
        bottom.plot(t, tokens, color=color, label=label)
    top.set_ylabel("step time (ms, 4 frames)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.set_ylabel("tokens held (cache + offloaded)")
    bottom.set_xlabel("stream time (minutes of video)")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"reverie eval speed, {result['torch_threads']} threads, {result['device']}", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="JSON of `reverie eval speed`")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--smooth", type=int, default=15, help="running-median samples")
    args = parser.parse_args()
    plot(json.loads(args.result.read_text()), args.out, args.smooth)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
