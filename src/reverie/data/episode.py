"""One recorded episode on disk: video, camera poses, actions, caption and scene description.

Layout of ``<root>/episodes/<id>/`` (RELIC §3: frame-aligned 6-DoF poses, per-frame actions,
content captions)::

    video.mp4      (T, H, W, 3) RGB frames, H.264
    cameras.json   fps, size, intrinsics K, R (T,3,3) world-to-camera, P (T,3) metres,
                   action scale d̄, trajectory family, revisit statistics
    actions.npy    (T, 13) float32 RELIC actions (docs/conventions.md)
    caption.txt    scene description (no camera motion)
    scene.json     the scene description (a SceneSpec for procedural worlds)
    depth.npz      optional, (T, H, W) float16 metres

An episode directory is written under a temporary name and renamed into place only when
complete (:func:`write_episode`), so a crash never leaves a half episode under its final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from reverie.camera import NUM_ACTIONS
from reverie.camera.rotations import check_rotations
from reverie.data.video import read_mp4, write_mp4
from reverie.worlds.episode import Episode

CAMERA_CONVENTION = (
    "world-to-camera R, camera centre P in metres, OpenCV camera axes "
    "(x right, y down, z forward), world z up"
)
EPISODE_FILES = ("video.mp4", "cameras.json", "actions.npy", "caption.txt", "scene.json")


def write_episode(episode_dir: str | os.PathLike, ep: Episode) -> None:
    """Write ``ep`` to ``episode_dir`` atomically (temporary directory, then rename).

    An existing directory of the same name (left by an interrupted run that never listed it
    in the manifest) is replaced.
    """
    final = Path(episode_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        write_mp4(tmp / "video.mp4", ep.frames, ep.fps)
        cameras = {
            "convention": CAMERA_CONVENTION,
            "fps": ep.fps,
            "width": ep.resolution[1],
            "height": ep.resolution[0],
            "K": np.asarray(ep.K).tolist(),
            "action_scale": ep.action_scale,
            "trajectory": ep.trajectory,
            "stats": ep.stats,
            "R": np.round(ep.R, 9).tolist(),
            "P": np.round(ep.P, 9).tolist(),
        }
        (tmp / "cameras.json").write_text(json.dumps(cameras))
        np.save(tmp / "actions.npy", ep.actions.astype(np.float32))
        (tmp / "caption.txt").write_text(ep.caption + "\n")
        (tmp / "scene.json").write_text(json.dumps(ep.scene, indent=1))
        if ep.depth is not None:
            np.savez_compressed(tmp / "depth.npz", depth=ep.depth.astype(np.float16))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"missing episode file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt JSON in {path}: {e}") from e


def read_cameras(episode_dir: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``cameras.json``; ``R``/``P`` come back as float64 arrays.

    Raises:
        FileNotFoundError / ValueError: naming the file.
    """
    path = Path(episode_dir) / "cameras.json"
    cams = _load_json(path)
    try:
        cams["R"] = check_rotations(np.asarray(cams["R"], dtype=np.float64), atol=1e-5)
        cams["P"] = np.asarray(cams["P"], dtype=np.float64)
        cams["K"] = np.asarray(cams["K"], dtype=np.float64)
        if cams["P"].shape != (len(cams["R"]), 3) or cams["K"].shape != (3, 3):
            raise ValueError(f"P {cams['P'].shape} / K {cams['K'].shape} have wrong shapes")
        if not np.isfinite(cams["P"]).all():
            raise ValueError("P contains NaN or inf")
        float(cams["fps"]), float(cams["action_scale"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"invalid camera file {path}: {e}") from e
    return cams


def read_actions(episode_dir: str | os.PathLike) -> np.ndarray:
    """Load ``actions.npy`` as ``(T, 13)`` float32; errors name the file."""
    path = Path(episode_dir) / "actions.npy"
    if not path.is_file():
        raise FileNotFoundError(f"missing episode file: {path}")
    try:
        actions = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"corrupt actions file {path}: {e}") from e
    if actions.ndim != 2 or actions.shape[1] != NUM_ACTIONS or not np.isfinite(actions).all():
        raise ValueError(
            f"invalid actions in {path}: expected finite (T, {NUM_ACTIONS}), got {actions.shape}"
        )
    return actions.astype(np.float32)


def read_episode(episode_dir: str | os.PathLike, *, depth: bool = False) -> Episode:
    """Load a whole episode (frames decoded) and check that its files agree.

    Raises:
        FileNotFoundError: a required file is missing (named).
        ValueError: a file is corrupt or the files disagree on the frame count (named).
    """
    d = Path(episode_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"episode directory not found: {d}")
    cams = read_cameras(d)
    actions = read_actions(d)
    frames = read_mp4(d / "video.mp4")
    caption_path = d / "caption.txt"
    if not caption_path.is_file():
        raise FileNotFoundError(f"missing episode file: {caption_path}")
    scene = _load_json(d / "scene.json")
    T = len(cams["R"])
    for name, n in (("video.mp4", len(frames)), ("actions.npy", len(actions))):
        if n != T:
            raise ValueError(f"{d / name} has {n} frames but cameras.json has {T}")
    dep = None
    if depth:
        dpath = d / "depth.npz"
        if not dpath.is_file():
            raise FileNotFoundError(f"missing episode file: {dpath} (render with --depth)")
        dep = np.load(dpath)["depth"].astype(np.float32)
    return Episode(
        frames=frames,
        R=cams["R"],
        P=cams["P"],
        actions=actions,
        action_scale=float(cams["action_scale"]),
        K=cams["K"],
        fps=float(cams["fps"]),
        caption=caption_path.read_text().strip(),
        scene=scene,
        trajectory=str(cams.get("trajectory", "unknown")),
        stats=dict(cams.get("stats", {})),
        depth=dep,
    )
