"""Figures of generated frames over ground truth on held-out scenes (README and docs).

    python scripts/make_strips.py --scene 3 --out docs/images/strip.png
    python scripts/make_strips.py --scene 3 --policies full,window,relic,mag,retrieval \
        --out docs/images/strip_policies.png

Default mode (`--policies` not given): the `reverie explore` experience. The model starts from
frame 0 of a held-out `revisit` path (scene seed 1_000_000 + scene) and generates every later
frame from the commanded actions alone (memory `--memory`); columns: the start, two frames while
leaving, three after the camera has come back; top row generated, bottom row ground truth.

`--policies`: the `reverie eval revisit` protocol. Ground truth is memorized until the camera
has left (frames 0..m), the model generates the return; one row per policy on the return leg,
ground truth last. Frames are upscaled 4x (nearest) so that 64x64 pixels stay visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reverie.engine import WorldModel
from reverie.evaluation.heldout import gamma_for
from reverie.evaluation.revisit_episode import build_episode
from reverie.runtime import setup_runtime

SCALE = 4


def episode(model, scene: int, seconds: float):
    return build_episode(
        scene,
        family="revisit",
        seconds=seconds,
        min_gap_s=3.0,
        min_revisit_frames=8,
        max_attempts=50,
        fps=model.fps,
        resolution=model.resolution,
        frames_per_step=model.frames_per_step,
    )


def generate(model, ep, policy: str, memorize: bool, seed: int = 0) -> np.ndarray:
    """All frames 0..end-1: memorized ground truth then generated ones (`memorize`), or frame 0
    then generated ones."""
    g, fs = ep.gt, model.frames_per_step
    m = ep.memorize_end if memorize else 0
    s = model.start(
        g.frames[0], g.caption, memory=policy, gamma=gamma_for(model, g.action_scale), seed=seed
    )
    if m > 0:
        s.observe(g.frames[1 : m + 1], g.actions[1 : m + 1])
    out = [g.frames[: m + 1]] + [s.step(g.actions[j : j + fs]) for j in range(m + 1, ep.end, fs)]
    s.close()
    return np.concatenate(out)


def grid(rows: list[np.ndarray], labels: list[str], cols: list[int], titles: list[str], out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(1.6 * len(cols), 1.7 * len(rows)), squeeze=False
    )
    for r, (frames, label) in enumerate(zip(rows, labels, strict=True)):
        for c, f in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(np.kron(frames[f], np.ones((SCALE, SCALE, 1), np.uint8)))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="world model directory (default: shipped)")
    p.add_argument("--scene", type=int, default=3, help="held-out scene index")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--memory", default="relic", help="memory policy of the default mode")
    p.add_argument("--policies", default=None, help="comma-separated: the per-policy mode")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    setup_runtime(threads=2, log_level="WARNING")
    model = WorldModel.from_pretrained(args.checkpoint)
    ep = episode(model, args.scene, args.seconds)
    fps, rev = model.fps, ep.revisit_frames
    picks = [int(rev[0]), int(rev[len(rev) // 2]), int(rev[-1])]
    if args.policies is None:
        leave = [max(1, ep.leave // 2), ep.leave]
        cols = [0, *leave, *picks]
        kinds = ["start", "leaving", "left", "back", "back", "back"]
        titles = [f"{k} {f / fps:.1f}s" for k, f in zip(kinds, cols, strict=True)]
        gen = generate(model, ep, args.memory, memorize=False)
        grid(
            [gen, ep.gt.frames],
            [f"generated ({args.memory})", "ground truth"],
            cols,
            titles,
            args.out,
        )
    else:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        cols = [
            ep.memorize_end,
            *sorted(set(int(rev[i]) for i in np.linspace(0, len(rev) - 1, 5).round().astype(int))),
        ]
        titles = [f"last memorized {cols[0] / fps:.1f}s"] + [f"{c / fps:.1f}s" for c in cols[1:]]
        rows = [generate(model, ep, n, memorize=True) for n in names]
        grid(rows + [ep.gt.frames], names + ["ground truth"], cols, titles, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
