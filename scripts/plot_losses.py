"""Plot the loss curves of a `scripts/train_default.sh` run (one panel per stage).

    python scripts/plot_losses.py --work runs/default --out docs/images/loss_curves.png

Reads `<work>/<stage>/metrics.jsonl` (the trainer's JSONL log) for every stage that has one and
plots each `*loss` key (and the VAE's PSNR) against the step, with a running mean over 10 logs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES = ("vae", "teacher", "student", "student2", "mag", "retrieval")  # student2: continued


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl with a `step`; skips blank or half-written lines."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in row:
            rows.append(row)
    return rows


def running_mean(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/default"))
    p.add_argument("--out", type=Path, default=Path("docs/images/loss_curves.png"))
    args = p.parse_args()
    panels = []
    for stage in STAGES:
        path = args.work / stage / "metrics.jsonl"
        if path.is_file():
            rows = read_metrics(path)
            keys = sorted({k for r in rows for k in r if k.endswith("loss") or k == "vae/psnr"})
            if rows and keys:
                panels.append((stage, rows, keys))
    if not panels:
        raise SystemExit(f"no metrics.jsonl under {args.work}")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (stage, rows, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if not pts:
                continue
            steps, values = zip(*pts, strict=True)
            target = ax.twinx() if key == "vae/psnr" else ax
            colour = "tab:orange" if key == "vae/psnr" else None
            (line,) = target.plot(steps, values, alpha=0.3, lw=0.8, color=colour)
            target.plot(steps, running_mean(list(values)), color=line.get_color(), label=key)
            if key == "vae/psnr":
                target.set_ylabel("PSNR (dB)")
                target.legend(loc="center right", fontsize=7)
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
