"""``reverie render``: render a dataset of episodes in parallel, resumably.

``<out>/dataset.json`` records the settings; ``<out>/manifest.jsonl`` lists one completed
episode per line. Each episode is written atomically (:func:`reverie.data.episode.write_episode`)
and only then appended to the manifest, so an interrupted render never lists a half episode;
running the same command again renders only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reverie.io import atomic_write_json, default_mode

log = logging.getLogger(__name__)

WorldName = Literal["procedural", "rooms", "open", "memory-maze"]
TrajectoryName = Literal["revisit", "random", "mixed"]
WORLDS: tuple[str, ...] = ("procedural", "rooms", "open", "memory-maze")
TRAJECTORIES: tuple[str, ...] = ("revisit", "random", "mixed")
_SCENE_KIND = {"procedural": "mixed", "rooms": "indoor", "open": "open"}
MAX_RESOLUTION = 1024  # the offscreen framebuffer MuJoCo renders into
MAX_EPISODE_FRAMES = 16 * 600  # 10 minutes at 16 fps
MAX_EPISODES = 10_000_000


@dataclass(frozen=True)
class RenderConfig:
    """Settings of a rendered dataset (stored in ``dataset.json``).

    Attributes:
        episodes: number of episodes (1 to ``MAX_EPISODES``).
        seconds: episode length in seconds (> 0); frames = round(seconds * fps), at most
            ``MAX_EPISODE_FRAMES``.
        resolution: square image side in pixels (multiple of 16, 16 to ``MAX_RESOLUTION``;
            64, 128, 256 tested).
        fps: frames per second (> 0).
        seed: dataset seed; episode ``i`` uses scene and trajectory seeds derived from
            ``(seed, i)``, so episodes do not depend on worker count or order.
        world: ``procedural`` (indoor rooms and open scenes, 3:1), ``rooms`` (indoor only),
            ``open`` (outdoor only) or ``memory-maze`` (needs ``reverie[memorymaze]``).
        trajectory: camera path family (``revisit``, ``random`` or ``mixed``).
        depth: also store depth maps.
    """

    episodes: int
    seconds: float
    resolution: int = 64
    fps: int = 16
    seed: int = 0
    world: WorldName = "procedural"
    trajectory: TrajectoryName = "mixed"
    depth: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.episodes <= MAX_EPISODES:
            raise ValueError(f"--episodes must be in [1, {MAX_EPISODES}], got {self.episodes}")
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        if self.resolution < 16 or self.resolution % 16 or self.resolution > MAX_RESOLUTION:
            raise ValueError(
                f"--resolution must be a multiple of 16 from 16 to {MAX_RESOLUTION}, got "
                f"{self.resolution}"
            )
        if not 0 < self.fps <= 240:
            raise ValueError(f"--fps must be in [1, 240], got {self.fps}")
        if self.seconds * self.fps > MAX_EPISODE_FRAMES:
            raise ValueError(
                f"--seconds {self.seconds:g} at --fps {self.fps} is {self.seconds * self.fps:g} "
                f"frames; an episode has at most {MAX_EPISODE_FRAMES}"
            )
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.world not in WORLDS:
            raise ValueError(f"unknown world {self.world!r}; expected one of {WORLDS}")
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"unknown trajectory {self.trajectory!r}; expected {TRAJECTORIES}")

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    def identity(self) -> dict[str, Any]:
        """Settings that must match to resume (everything but the episode count)."""
        d = dataclasses.asdict(self)
        d.pop("episodes")
        return d


def episode_id(index: int) -> str:
    return f"{index:06d}"


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(scene seed, trajectory seed) of episode ``index``, in [0, 2**31)."""
    a, b = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(a) % 2**31, int(b) % 2**31


def render_episode(cfg: RenderConfig, index: int, out: str | os.PathLike) -> dict[str, Any]:
    """Render episode ``index`` of ``cfg`` into ``out/episodes/<id>``; returns its manifest row."""
    from reverie.camera import poses_to_actions
    from reverie.data.episode import Episode, write_episode
    from reverie.worlds.revisit import revisit_stats

    scene_seed, traj_seed = episode_seeds(cfg.seed, index)
    if cfg.world == "memory-maze":
        from reverie.worlds.memory_maze import record_memory_maze

        if cfg.depth:
            raise ValueError("depth maps are not available for the memory-maze world")
        ep = record_memory_maze(
            seed=scene_seed, frames=cfg.frames, fps=cfg.fps, resolution=cfg.resolution
        )
        kind = "memory-maze"
    else:
        from reverie.worlds.caption import scene_caption
        from reverie.worlds.render import SceneRenderer
        from reverie.worlds.sampling import sample_scene
        from reverie.worlds.trajectory import sample_trajectory

        spec = sample_scene(scene_seed, _SCENE_KIND[cfg.world])
        traj = sample_trajectory(
            spec, cfg.trajectory, seconds=cfg.frames / cfg.fps, fps=cfg.fps, seed=traj_seed
        )
        R, P = traj.R[: cfg.frames], traj.P[: cfg.frames]
        with SceneRenderer(spec, cfg.resolution, cfg.resolution) as renderer:
            frames, depth = renderer.render_trajectory(R, P, depth=cfg.depth)
            K = renderer.K
        actions, scale = poses_to_actions(R, P)
        ep = Episode(
            frames=frames,
            R=R,
            P=P,
            actions=actions,
            action_scale=scale,
            K=K,
            fps=float(cfg.fps),
            caption=scene_caption(spec),
            scene=spec.to_dict(),
            trajectory=cfg.trajectory,
            depth=depth,
        )
        kind = spec.kind
    ep.stats.update(revisit_stats(ep.R, ep.P, cfg.fps).to_dict())
    eid = episode_id(index)
    write_episode(Path(out) / "episodes" / eid, ep)
    os.chmod(Path(out) / "episodes" / eid, default_mode(directory=True))  # mkdtemp made 0700
    return {
        "id": eid,
        "index": index,
        "world": cfg.world,
        "scene_kind": kind,
        "scene_seed": scene_seed,
        "trajectory_seed": traj_seed,
        "trajectory": cfg.trajectory,
        "frames": ep.num_frames,
        "fps": cfg.fps,
        "height": ep.resolution[0],
        "width": ep.resolution[1],
        "action_scale": ep.action_scale,
        "revisit_fraction": ep.stats.get("revisit_fraction"),
    }


def read_manifest(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Completed episodes listed in ``out/manifest.jsonl``, sorted by index.

    A trailing partial line (a crash while appending) is ignored with a warning.

    Raises:
        FileNotFoundError: no manifest.
        ValueError: a corrupt line that is not the last one (names file and line).
    """
    path = Path(out) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: is {out} a rendered dataset?")
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                log.warning("ignoring a partial last line in %s", path)
                continue
            raise ValueError(f"corrupt manifest {path}, line {n}: {e}") from e
    return sorted(rows, key=lambda r: r["index"])


def remove_partial_episodes(out: Path) -> list[Path]:
    """Delete the ``episodes/.tmp-*`` directories a killed render left (never listed)."""
    episodes = out / "episodes"
    stale = sorted(episodes.glob(".tmp-*")) if episodes.is_dir() else []
    for path in stale:
        log.info("removing %s, left by an interrupted render", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _prepare(cfg: RenderConfig, out: Path) -> list[dict[str, Any]]:
    """Check or write ``dataset.json``; return the rows already complete (manifest repaired)."""
    meta_path = out / "dataset.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"corrupt {meta_path}: {e}") from e
        try:
            stored = RenderConfig(**meta["config"]).identity()
        except (KeyError, TypeError) as e:
            raise ValueError(f"corrupt {meta_path}: {e!r}; use a new --out") from e
        if stored != cfg.identity():
            diff = {k: (stored[k], v) for k, v in cfg.identity().items() if stored.get(k) != v}
            raise ValueError(
                f"{out} was rendered with other settings {diff} (stored, asked); "
                f"use a new --out or the same settings to resume"
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable")
    remove_partial_episodes(out)
    atomic_write_json(meta_path, {"config": dataclasses.asdict(cfg), "format": 1})
    if not (out / "manifest.jsonl").is_file():
        return []
    rows = read_manifest(out)
    # Rewrite the manifest so that a partial last line is gone before we append to it.
    from reverie.io import atomic_write_text

    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _worker(args: tuple[RenderConfig, int, str]) -> dict[str, Any]:
    cfg, index, out = args
    return render_episode(cfg, index, out)


def render_dataset(
    cfg: RenderConfig,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    progress: bool = True,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict]:
    """Render the missing episodes of ``cfg`` into ``out``; returns the full manifest.

    Args:
        workers: processes (spawned, each with its own GL context); 1 renders in-process.
        progress: show a tqdm progress bar (episodes and frames).
        on_episode: called with each new manifest row (after it is listed).

    Raises:
        ValueError: ``out`` holds a dataset rendered with other settings, or bad settings.
    """
    from tqdm import tqdm

    out = Path(out)
    done = _prepare(cfg, out)
    have = {r["index"] for r in done}
    todo = [i for i in range(cfg.episodes) if i not in have]
    if not todo:
        return read_manifest(out)
    bar = tqdm(
        total=cfg.episodes,
        initial=cfg.episodes - len(todo),
        unit="ep",
        disable=not progress,
        desc=f"render {out.name}",
    )
    jobs = [(cfg, i, str(out)) for i in todo]
    with open(out / "manifest.jsonl", "a") as manifest:

        def record(row: dict[str, Any]) -> None:
            manifest.write(json.dumps(row) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())
            bar.update(1)
            bar.set_postfix(frames=row["frames"], revisit=row.get("revisit_fraction"))
            if on_episode is not None:
                on_episode(row)

        if workers <= 1:
            for job in jobs:
                record(_worker(job))
        else:
            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for row in pool.imap_unordered(_worker, jobs):
                    record(row)
    bar.close()
    return read_manifest(out)
