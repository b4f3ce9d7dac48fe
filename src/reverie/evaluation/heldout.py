"""Held-out evaluation scenes: seeds disjoint from training, ground-truth renders.

Training datasets (``reverie render``) draw the scene seed of episode ``i`` as
``episode_seeds(seed, i)[0]``, a hash in ``[0, 2**31)``. Evaluation instead uses the fixed,
documented range

    scene seed of held-out scene ``i``      = ``EVAL_SCENE_SEED_BASE + i``       (1_000_000 + i)
    trajectory seed of attempt ``a`` of it  = ``EVAL_TRAJECTORY_SEED_BASE + 1000 i + a``

A hashed training seed can in principle land in this range (probability about 1e-7 per
held-out scene for a 160-episode dataset), so every command that knows the training set
(``--training-manifest``) checks with :func:`check_disjoint` and refuses to run on overlap.

Scenes are sampled with kind ``"mixed"`` (indoor with probability 3/4, as the ``procedural``
training world) and rendered with :class:`reverie.worlds.render.SceneRenderer` straight to uint8
(no MP4 round trip, unlike training episodes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from reverie.worlds.spec import SceneSpec
    from reverie.worlds.trajectory import CameraTrajectory

EVAL_SCENE_SEED_BASE = 1_000_000
"""Scene seed of held-out scene 0; scene ``i`` uses ``EVAL_SCENE_SEED_BASE + i``."""

EVAL_TRAJECTORY_SEED_BASE = 2_000_000
"""Trajectory seeds of held-out scene ``i`` start at ``EVAL_TRAJECTORY_SEED_BASE + 1000 i``."""

MAX_ATTEMPTS = 1000
"""Trajectory attempts per scene (the stride between scenes' trajectory seed ranges)."""


def heldout_scene_seed(index: int) -> int:
    """Scene seed of held-out scene ``index`` (>= 0)."""
    if index < 0:
        raise ValueError(f"held-out scene index must be >= 0, got {index}")
    return EVAL_SCENE_SEED_BASE + index


def heldout_trajectory_seed(index: int, attempt: int = 0) -> int:
    """Trajectory seed of attempt ``attempt`` (0 <= attempt < MAX_ATTEMPTS) for scene ``index``."""
    if index < 0:
        raise ValueError(f"held-out scene index must be >= 0, got {index}")
    if not 0 <= attempt < MAX_ATTEMPTS:
        raise ValueError(f"attempt must be in [0, {MAX_ATTEMPTS}), got {attempt}")
    return EVAL_TRAJECTORY_SEED_BASE + MAX_ATTEMPTS * index + attempt


def training_scene_seeds(manifest: str | os.PathLike) -> set[int]:
    """Scene seeds listed in a training manifest.

    Args:
        manifest: a ``manifest.jsonl`` file or a dataset directory that holds one.

    Raises:
        FileNotFoundError: no manifest there.
        ValueError: a row without ``scene_seed``.
    """
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"training manifest not found: {path}")
    seeds = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "scene_seed" not in row:
            raise ValueError(f"{path} line {n} has no scene_seed")
        seeds.add(int(row["scene_seed"]))
    return seeds


def check_disjoint(seeds: list[int], manifest: str | os.PathLike | None) -> None:
    """Raise ValueError if any evaluation scene seed is a training scene seed of ``manifest``.

    Does nothing when ``manifest`` is None.
    """
    if manifest is None:
        return
    overlap = sorted(set(seeds) & training_scene_seeds(manifest))
    if overlap:
        raise ValueError(f"held-out scene seeds {overlap} are training scenes in {manifest}")


@dataclass(frozen=True, eq=False)
class GroundTruthEpisode:
    """A held-out scene with a camera path and its ground-truth renders.

    Shapes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        R: ``(T, 3, 3)`` float64 world-to-camera; P: ``(T, 3)`` float64 camera centres, metres.
        actions: ``(T, 13)`` float32 commanded actions (``poses_to_actions``, RELIC Algorithm 1),
            normalised by ``action_scale`` (metres per frame), which the model gets as ``gamma``.
    """

    index: int
    scene_seed: int
    trajectory_seed: int
    scene_kind: str
    caption: str
    frames: np.ndarray
    R: np.ndarray
    P: np.ndarray
    actions: np.ndarray
    action_scale: float
    fps: int


def sample_heldout_path(
    index: int, family: str, seconds: float, fps: int, attempt: int = 0
) -> tuple[SceneSpec, CameraTrajectory]:
    """(scene spec, camera trajectory) of held-out scene ``index`` and trajectory ``attempt``.

    Raises:
        ValueError: a negative index, an attempt outside ``[0, MAX_ATTEMPTS)``, an unknown
            family or non-positive seconds / fps.
    """
    from reverie.worlds import sample_scene
    from reverie.worlds.trajectory import sample_trajectory

    spec = sample_scene(heldout_scene_seed(index), "mixed")
    seed = heldout_trajectory_seed(index, attempt)
    traj = sample_trajectory(spec, family, seconds=seconds, fps=fps, seed=seed)
    return spec, traj


def render_heldout(
    index: int,
    spec: SceneSpec,
    R: np.ndarray,
    P: np.ndarray,
    *,
    trajectory_seed: int,
    resolution: int,
    fps: int,
) -> GroundTruthEpisode:
    """Render ground truth of held-out scene ``index`` along ``(R, P)`` and derive its actions.

    Shapes: R ``(T, 3, 3)``, P ``(T, 3)`` (docs/conventions.md); frames ``(T, res, res, 3)``.
    """
    from reverie.camera import poses_to_actions
    from reverie.worlds.caption import scene_caption
    from reverie.worlds.render import SceneRenderer

    with SceneRenderer(spec, resolution, resolution) as renderer:
        frames, _ = renderer.render_trajectory(R, P)
    actions, scale = poses_to_actions(R, P)
    return GroundTruthEpisode(
        index=index,
        scene_seed=heldout_scene_seed(index),
        trajectory_seed=trajectory_seed,
        scene_kind=spec.kind,
        caption=scene_caption(spec),
        frames=frames,
        R=np.asarray(R, dtype=np.float64),
        P=np.asarray(P, dtype=np.float64),
        actions=actions,
        action_scale=float(scale),
        fps=fps,
    )


def gamma_for(model, action_scale: float) -> float:
    """Velocity coefficient that makes ``model`` move ``action_scale`` metres per unit action.

    The engine moves ``gamma * model.config.metres_per_unit`` metres per frame for a unit
    translation action (RELIC §5.2), and ``poses_to_actions`` normalised the path by
    ``action_scale`` (d-bar, metres per frame), so ``gamma = action_scale / metres_per_unit``
    replays the ground-truth path exactly.
    """
    from reverie.engine.world_model import gamma_for_scale

    return gamma_for_scale(action_scale, model.config.metres_per_unit)


def model_info(model) -> dict:
    """JSON facts about the evaluated model (source, resolution, fps, device)."""
    return {
        "source": str(model.source),
        "resolution": int(model.resolution),
        "fps": int(model.fps),
        "frames_per_step": int(model.frames_per_step),
        "device": str(model.device),
    }
