"""`reverie eval actions`: action accuracy as RPE (RELIC arXiv 2512.04040 §5.3).

For each held-out scene (:mod:`reverie.evaluation.heldout`, ``mixed`` camera path of
``seconds``; attempt 0 of its trajectory seeds):

1. start a session on the ground-truth first frame (scene caption as prompt, or empty);
2. step along the path's commanded actions (``poses_to_actions``, RELIC Algorithm 1, with
   ``gamma`` from :func:`reverie.evaluation.heldout.gamma_for`), generating every frame after
   the first;
3. recover the camera trajectory of the generated video with the pose probe
   (:mod:`reverie.evaluation.probe`: one pose per ``stride`` frames, chained);
4. align it to the commanded trajectory (``Session.poses`` at the same frames) with Sim(3)
   Umeyama and report RPE translation (metres) and rotation (degrees)
   (:mod:`reverie.evaluation.trajectory_error`).

Two references use the same probe and the same commanded trajectories: ``ground_truth`` (the
probe on the ground-truth renders: the error floor of a perfect model) and ``static`` (the
probe on the first frame repeated: a model that ignores the actions).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from reverie.evaluation.heldout import (
    gamma_for,
    heldout_scene_seed,
    heldout_trajectory_seed,
    render_heldout,
    sample_heldout_path,
)
from reverie.evaluation.probe import PoseProbe, recover_trajectory
from reverie.evaluation.trajectory_error import mean_rpe, rpe


@dataclass(frozen=True)
class ActionsConfig:
    """Settings of the action-accuracy benchmark.

    Attributes:
        scenes: number of held-out scenes (indices ``0..scenes-1``).
        seconds: length of each commanded path, seconds (rounded down to whole steps).
        policies: memory policies to run.
        family: trajectory family of the commanded paths (``mixed``: as the training data).
        prompt: ``caption`` or ``empty``.
        seed: generation seed.
    """

    scenes: int = 8
    seconds: float = 10.0
    policies: tuple[str, ...] = ("relic",)
    family: str = "mixed"
    prompt: str = "caption"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenes < 1 or not self.seconds > 0 or not self.policies:
            raise ValueError("need --scenes >= 1, --seconds > 0 and at least one policy")
        if self.prompt not in ("caption", "empty"):
            raise ValueError(f"--prompt must be 'caption' or 'empty', got {self.prompt!r}")


def generate_path(model, gt, policy: str, cfg: ActionsConfig) -> tuple[np.ndarray, tuple, dict]:
    """Generate the whole path of ``gt`` from its first frame (steps 1-2).

    Shapes: returns video ``(T, res, res, 3)`` uint8 (frame 0 = the session's first frame),
    commanded poses ``(R (T, 3, 3), P (T, 3))`` and timing/cache facts.
    """
    fs = model.frames_per_step
    prompt = gt.caption if cfg.prompt == "caption" else ""
    t0 = time.perf_counter()
    session = model.start(
        gt.frames[0], prompt, memory=policy, gamma=gamma_for(model, gt.action_scale), seed=cfg.seed
    )
    video = [session.first_frame[None]]
    for j in range(1, len(gt.frames), fs):
        video.append(session.step(gt.actions[j : j + fs]))  # (fs, res, res, 3)
    stats, poses = session.stats(), session.poses
    session.close()
    info = {
        "generate_s": time.perf_counter() - t0,
        "cache_tokens": int(stats["cache_tokens"]),
        "cache_bytes": int(stats["cache_bytes"]),
    }
    return np.concatenate(video), poses, info


def run_actions(model, probe: PoseProbe, cfg: ActionsConfig, *, progress: bool = True) -> dict:
    """Run the benchmark for each policy of ``cfg``; returns the JSON-serialisable result.

    Raises:
        ValueError: unknown policy, or a probe whose resolution / stride does not fit the model.
    """
    from tqdm import tqdm

    fs = model.frames_per_step
    s = probe.config.stride
    unknown = [p for p in cfg.policies if p not in model.memory_policies]
    if unknown:
        raise ValueError(
            f"unknown memory policies {unknown}; this model has {list(model.memory_policies)}"
        )
    if probe.config.resolution != model.resolution:
        raise ValueError(
            f"the probe takes {probe.config.resolution}px frames, the model makes "
            f"{model.resolution}px"
        )
    steps = int(cfg.seconds * model.fps) // fs
    if steps * fs // s < 2:
        raise ValueError(f"--seconds {cfg.seconds} gives fewer than 3 probe poses; raise it")
    episodes = []
    for i in range(cfg.scenes):
        spec, traj = sample_heldout_path(i, cfg.family, (1 + steps * fs) / model.fps, model.fps)
        T = 1 + steps * fs
        episodes.append(
            render_heldout(
                i,
                spec,
                traj.R[:T],
                traj.P[:T],
                trajectory_seed=heldout_trajectory_seed(i),
                resolution=model.resolution,
                fps=model.fps,
            )
        )
    refs, floor, static = [], [], []
    for gt in episodes:
        # The commanded trajectory relative to frame 0 (what Session.poses holds).
        R = gt.R @ gt.R[0].T
        P = (gt.P - gt.P[0]) @ gt.R[0].T
        K = (len(gt.frames) - 1) // s + 1
        refs.append((R[::s][:K], P[::s][:K]))
        floor.append(rpe(*refs[-1], *recover_trajectory(probe, gt.frames)))
        still = np.broadcast_to(gt.frames[:1], gt.frames.shape)
        static.append(rpe(*refs[-1], *recover_trajectory(probe, still)))
    result: dict = {
        "benchmark": "actions",
        "config": asdict(cfg),
        "probe": {"resolution": probe.config.resolution, "stride": s},
        "episodes": [
            {
                "index": gt.index,
                "scene_seed": heldout_scene_seed(gt.index),
                "trajectory_seed": gt.trajectory_seed,
                "scene_kind": gt.scene_kind,
                "frames": len(gt.frames),
                "action_scale": gt.action_scale,
            }
            for gt in episodes
        ],
        "references": {
            "ground_truth": mean_rpe(floor) | {"episodes": floor},
            "static": mean_rpe(static) | {"episodes": static},
        },
        "policies": {},
    }
    bar = tqdm(total=len(cfg.policies) * len(episodes), desc="generate", disable=not progress)
    for policy in cfg.policies:
        rows = []
        for gt, ref in zip(episodes, refs, strict=True):
            video, (Rc, Pc), info = generate_path(model, gt, policy, cfg)
            K = len(ref[1])
            command_error = float(np.max(np.linalg.norm(Pc[::s][:K] - ref[1], axis=-1)))
            rows.append(
                rpe(*ref, *recover_trajectory(probe, video))
                | info
                | {"command_error_m": command_error}
            )
            bar.update(1)
        result["policies"][policy] = mean_rpe(rows) | {"episodes": rows}
    bar.close()
    return result


def format_table(result: dict) -> str:
    """Short text table (one row per policy and reference)."""
    lines = [f"{'':<14} {'RPE trans (m)':>13} {'RPE rot (deg)':>13} {'n':>3}"]
    rows = list(result["policies"].items()) + [
        (f"({k})", v) for k, v in result["references"].items()
    ]
    for name, r in rows:
        lines.append(f"{name:<14} {r['trans_rmse']:13.4f} {r['rot_rmse']:13.3f} {r['n']:3d}")
    return "\n".join(lines)
