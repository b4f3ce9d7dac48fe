"""Plot revisit PSNR against time since the first visit, one line per memory policy.

Reads the JSON of `reverie eval revisit` (its per-policy ``curve``: revisit-frame PSNR vs the
ground truth, binned by seconds since the place was first seen) and writes a PNG:

    python scripts/plot_revisit.py benchmarks/results/revisit.json \
        --out docs/images/revisit_psnr.png

The dashed grey line is the ``last_context_frame`` reference (repeat the last memorized frame)
on the same revisit frames. Bins with fewer than ``--min-count`` frames are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STYLE = {
    "full": ("tab:blue", "o"),
    "window": ("tab:orange", "s"),
    "relic": ("tab:green", "^"),
    "mag": ("tab:red", "D"),
    "retrieval": ("tab:purple", "v"),
}


def plot(result: dict, out: Path, min_count: int = 4) -> None:
    """Write the figure of a revisit ``result`` to ``out`` (PNG, 150 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, pol in result["policies"].items():
        rows = [r for r in pol["curve"] if r["n"] >= min_count]
        if not rows:
            continue
        color, marker = STYLE.get(name, (None, "x"))
        s = pol["summary"]
        label = f"{name} ({s['revisit_psnr_gt']:.2f} dB, {s['max_cache_tokens']} tok)"
        ax.plot(
            [r["t_s"] for r in rows],
            [r["psnr"] for r in rows],
            marker=marker,
            color=color,
            label=label,
        )
    ref = result["baselines"]["last_context_frame"]["revisit_psnr_gt"]
    ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="last context frame")
    ax.set_xlabel("time since first visit (s)")
    ax.set_ylabel("revisit PSNR vs ground truth (dB)")
    n = len(result["episodes"])
    scenes = f"{n} held-out scene{'s' if n != 1 else ''}"
    source = Path(str(result['model']['source'])).name or 'model'
    ax.set_title(f"Revisit consistency, {scenes} ({source})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="JSON written by `reverie eval revisit`")
    parser.add_argument("--out", default="docs/images/revisit_psnr.png", help="PNG to write")
    parser.add_argument("--min-count", type=int, default=4, help="smallest bin shown (frames)")
    args = parser.parse_args(argv)
    result = json.loads(Path(args.result).read_text())
    if result.get("benchmark") != "revisit":
        raise SystemExit(f"{args.result} is not a `reverie eval revisit` result")
    plot(result, Path(args.out), args.min_count)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
