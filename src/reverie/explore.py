"""`reverie explore`: stream a world model along a camera path and measure it.

    reverie explore --scene 1000003 --seconds 10 --memory relic --out out.mp4 --json out.json
    reverie explore --image start.png --prompt "a red room" --actions "pan_left*32 dolly_in*32"

With `--scene SEED` the start frame is rendered from that procedural scene (`reverie.worlds`);
the camera path is `--trajectory`, `--actions` (integrated from a collision-free start pose
of the scene) or, by default, a sampled `revisit` path that leaves and comes back. The
ground-truth video along the same path (`out.gt.mp4`), a side-by-side (`out.compare.mp4`,
generated | ground truth) and per-frame PSNR/SSIM are written too.

The camera path becomes actions with RELIC Algorithm 1 (`poses_to_actions`) and its scale
d-bar sets the session's gamma (`d-bar / metres_per_unit`), so the model's integrated poses
match the path; with `--actions` the path is integrated from the actions with
`gamma * metres_per_unit` metres per unit translation (RELIC §4.1.2, §5.2).

Metrics JSON (always): `fps_end_to_end` (generated frames / wall time of session start and
all steps: encode, denoise, cache writes, decode), `fps_denoise` (generated frames / DiT time),
`first_frame_latency_s` (session start to the first generated frames), `peak_rss_mb`,
`cache_tokens`, `cache_bytes` (everything the memory policy holds at the end), `frames`,
`memory_policy`, `checkpoint`, plus `psnr`/`ssim` lists with `--scene`.

Lengths: an action script sets the video length (one frame per scripted action after the start
frame) and a trajectory file sets it too (one pose per frame); otherwise `--seconds` (default
10) does. Given together, they must agree: a mismatch is an error, never a silent truncation or
a held last action. A video has `1 + frames_per_step * k` frames, at most `MAX_FRAMES`.
Every output (`--out` and its `.gt`/`.compare` videos, `--json`) is checked writable before
generation and written together at the end, or not at all.

The same run from Python (the CLI is a thin shell over it; `ExploreConfig` has its options):

    from reverie.explore import ExploreConfig, explore
    metrics = explore(ExploreConfig(scene=1000003, seconds=10, memory="relic", random=True))
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SCRIPT = "pan_left*24 dolly_in*16 pan_right*48 dolly_out*16 pan_left*24"
DEFAULT_SECONDS = 10.0
MAX_FRAMES = 9601  # 10 minutes at 16 fps: about 120 MB of 64x64 frames held for the videos
MAX_TRAJECTORY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ExploreConfig:
    """One exploration: the start, the camera path, the model and the outputs.

    The fields are the options of `reverie explore` (same names, same defaults; the CLI builds
    this from its arguments). Exactly one of `scene` and `image` gives the start.

    Attributes:
        scene: procedural scene seed (`reverie.worlds`): renders the start frame and the
            ground truth along the path.
        world: scene family of `scene`: "mixed", "indoor" or "open".
        image: start image file (PNG/JPEG), centre-cropped and resized to the model.
        prompt: text description; None: the scene's caption (empty with `image`).
        actions: action script, e.g. "pan_left*16 dolly_in+pan_right*8" (sets the length).
        trajectory: camera path JSON `{"R": (T, 3, 3), "P": (T, 3)}` (sets the length).
        gamma: velocity multiplier in `GAMMA_RANGE` (RELIC §5.2).
        seconds: video length; None: the length of `actions` / `trajectory`, else
            `DEFAULT_SECONDS`. Given with either, the two must agree.
        memory: memory policy name (`reverie.memory.policy_names`).
        checkpoint: world model directory; None: the shipped model.
        random: an untrained tiny model instead (testing); not with `checkpoint`.
        seed: noise seed.
        threads: torch threads per stream thread (>= 1).
        out: output video (`.mp4`); with `scene` also `.gt.mp4` and `.compare.mp4` beside it.
        json: metrics JSON path, or None.
        quiet: no progress bar.

    Raises (on construction, before any model is loaded):
        ValueError: naming the option (`--threads`, `--gamma`, ...) and what would be valid.
    """

    scene: int | None = None
    world: str = "mixed"
    image: str | Path | None = None
    prompt: str | None = None
    actions: str | None = None
    trajectory: str | Path | None = None
    gamma: float = 1.0
    seconds: float | None = None
    memory: str = "relic"
    checkpoint: str | Path | None = None
    random: bool = False
    seed: int = 0
    threads: int = 1
    out: str | Path = "out.mp4"
    json: str | Path | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        """Every check that needs no model (the output paths are checked by `explore`)."""
        from reverie.engine.world_model import GAMMA_RANGE, check_prompt

        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if (self.scene is None) == (self.image is None):
            raise ValueError("give exactly one of --scene SEED or --image PNG")
        if self.trajectory is not None and self.actions is not None:
            raise ValueError("give at most one of --actions and --trajectory")
        lo, hi = GAMMA_RANGE
        if not (math.isfinite(self.gamma) and lo <= self.gamma <= hi):
            raise ValueError(
                f"--gamma must be in [{lo}, {hi}] (the speeds the model was trained for), "
                f"got {self.gamma}"
            )
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        if self.prompt is not None:
            check_prompt(self.prompt, "--prompt")
        if self.actions is not None:
            if script_length(self.actions) >= MAX_FRAMES:
                raise ValueError(
                    f"--actions scripts {script_length(self.actions)} frames; a video has at "
                    f"most {MAX_FRAMES}"
                )
            from reverie.camera.script import parse_action_script

            parse_action_script(self.actions)  # the grammar, before any model is loaded
        if self.random and self.checkpoint is not None:
            raise ValueError("give at most one of --random and --checkpoint")


@dataclass
class CameraPath:
    """What to stream: per-frame actions, the session gamma and, with a scene, world poses.

    Attributes:
        actions: `(T, 13)` float32, frame-aligned (`actions[0]` static).
        gamma: velocity multiplier for the session.
        R, P: world poses `(T, 3, 3)`, `(T, 3)` for ground-truth rendering, or None.
    """

    actions: np.ndarray
    gamma: float
    R: np.ndarray | None = None
    P: np.ndarray | None = None


def frame_count(seconds: float, fps: int, frames_per_step: int) -> int:
    """Frames of a stream of about `seconds`: `1 + frames_per_step * k`, k >= 1.

    Raises:
        ValueError: `seconds` not finite and > 0, or more than `MAX_FRAMES` frames.
    """
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    limit = f"at most {MAX_FRAMES} frames ({(MAX_FRAMES - 1) / fps:g} s at {fps} fps)"
    if seconds * fps > MAX_FRAMES:
        raise ValueError(f"--seconds {seconds:g} is too long: a video has {limit}")
    steps = max(1, round((seconds * fps - 1) / frames_per_step))
    return 1 + frames_per_step * steps


def check_frames(frames: int, what: str, fps: int, frames_per_step: int) -> int:
    """`frames` if it is a valid video length (`1 + frames_per_step * k`, <= `MAX_FRAMES`).

    Raises:
        ValueError: naming `what` (the action script, the trajectory) and the valid lengths.
    """
    if frames > MAX_FRAMES:
        raise ValueError(
            f"{what} gives {frames} frames; a video has at most {MAX_FRAMES} "
            f"({(MAX_FRAMES - 1) / fps:g} s at {fps} fps)"
        )
    if frames < 1 + frames_per_step or (frames - 1) % frames_per_step:
        lo = max(1, (frames - 1) // frames_per_step)
        near = sorted({1 + frames_per_step * lo, 1 + frames_per_step * (lo + 1)})
        raise ValueError(
            f"{what} gives {frames} frames; the model makes 1 start frame + {frames_per_step} "
            f"per step, so use {' or '.join(map(str, near))} frames"
        )
    return frames


def script_length(script: str) -> int:
    """Scripted frames of an action script, counted without expanding it (so that
    `pan_left*100000000` is refused before it allocates); malformed segments count 0 and are
    reported by the parser."""
    total = 0
    for segment in script.split():
        count = segment.rpartition("*")[2]
        total += int(count) if count.isdigit() else 0
    return total


def fit_actions(actions: np.ndarray, count: int) -> np.ndarray:
    """`(count, 13)`: a static start row, then exactly `count - 1` actions.

    Raises:
        ValueError: `actions` is not `count - 1` rows long (no truncation, no held last row).
    """
    from reverie.camera.actions import NUM_ACTIONS, STATIC_INDEX

    actions = np.asarray(actions, np.float32)
    if len(actions) != count - 1:
        raise ValueError(f"{len(actions)} actions given, {count - 1} needed for {count} frames")
    static = np.zeros((1, NUM_ACTIONS), np.float32)
    static[0, STATIC_INDEX] = 1.0
    return np.concatenate([static, actions])


def cycle_actions(actions: np.ndarray, count: int) -> np.ndarray:
    """`count` rows of `actions` repeated as a loop (the default image path returns to its
    start, so repeating it is a longer tour, not a frozen camera)."""
    return np.resize(np.asarray(actions, np.float32), (count, actions.shape[1]))


def read_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Camera path JSON: `{"R": [[3x3], ...], "P": [[x, y, z], ...]}` (world-to-camera R, camera
    centres in metres, docs/conventions.md), one entry per video frame.

    Raises:
        FileNotFoundError / ValueError: missing file, bad JSON, shapes, NaN, non-rotations.
    """
    from reverie.camera.rotations import check_rotations

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory {path} not found")
    if path.stat().st_size > MAX_TRAJECTORY_BYTES:
        raise ValueError(f"trajectory {path} is larger than {MAX_TRAJECTORY_BYTES >> 20} MB")
    try:
        data = json.loads(path.read_text())
        R, P = np.asarray(data["R"], np.float64), np.asarray(data["P"], np.float64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: expected JSON with R (T, 3, 3) and P (T, 3): {e}") from e
    if R.ndim != 3 or R.shape[1:] != (3, 3) or P.shape != (len(R), 3) or len(R) < 2:
        raise ValueError(f"{path}: R must be (T, 3, 3) and P (T, 3) with T >= 2")
    if not (np.isfinite(R).all() and np.isfinite(P).all()):
        raise ValueError(f"{path}: NaN or inf in the trajectory")
    check_rotations(R, "R")
    return R, P


def path_from_poses(R: np.ndarray, P: np.ndarray, model) -> CameraPath:
    """Actions (RELIC Algorithm 1) and the gamma that makes them reproduce `P`."""
    from reverie.camera.actions import poses_to_actions

    actions, scale = poses_to_actions(R, P)
    return CameraPath(actions.astype(np.float32), model.gamma_for(scale), R, P)


def video_length(config: ExploreConfig, model) -> int:
    """Frames of the video: set by `--actions` or `--trajectory` unless `--seconds` is given;
    when both are, they must agree.

    Raises:
        ValueError: a mismatch, or a length that is not `1 + frames_per_step * k` or exceeds
            `MAX_FRAMES` (checked before the script is expanded or any frame generated).
    """
    fps, step = model.fps, model.frames_per_step
    from_seconds = None if config.seconds is None else frame_count(config.seconds, fps, step)
    if config.actions is not None:
        source, frames = f"--actions {config.actions!r}", 1 + script_length(config.actions)
    elif config.trajectory is not None:
        source = f"--trajectory {config.trajectory}"
        frames = len(read_trajectory(config.trajectory)[0])
    else:
        return from_seconds or frame_count(DEFAULT_SECONDS, fps, step)
    if frames > MAX_FRAMES or from_seconds is None:
        return check_frames(frames, source, fps, step)
    if frames != from_seconds:
        raise ValueError(
            f"{source} gives {frames} frames but --seconds {config.seconds:g} gives "
            f"{from_seconds}; drop --seconds to use the path's length"
        )
    return frames


def plan_path(config: ExploreConfig, model, count: int):
    """`(CameraPath, start frame or None, prompt, scene spec or None)` of an exploration; the
    path has exactly `count` frames (see `video_length`)."""
    from reverie.camera.actions import actions_to_poses
    from reverie.camera.script import parse_action_script

    fps, unit = model.fps, model.config.metres_per_unit
    scripted = None if config.actions is None else parse_action_script(config.actions)
    if config.scene is None:
        if config.trajectory is not None:
            R, P = read_trajectory(config.trajectory)
            path = path_from_poses(R, P, model)
            path.R = path.P = None
            path.gamma *= config.gamma
        elif scripted is not None:
            path = CameraPath(fit_actions(scripted, count), config.gamma)
        else:
            default = parse_action_script(DEFAULT_IMAGE_SCRIPT)
            path = CameraPath(fit_actions(cycle_actions(default, count - 1), count), config.gamma)
        return path, None, config.prompt or "", None

    from reverie.worlds import sample_scene
    from reverie.worlds.caption import scene_caption
    from reverie.worlds.render import render_start_frame
    from reverie.worlds.trajectory import sample_trajectory

    spec = sample_scene(config.scene, config.world)
    seconds = count / fps + 1.0
    if config.trajectory is not None:
        R, P = read_trajectory(config.trajectory)
        path = path_from_poses(R, P, model)
    elif scripted is not None:
        start = sample_trajectory(spec, "revisit", seconds=1.0, fps=fps, seed=config.scene)
        actions = fit_actions(scripted, count)
        R, P = actions_to_poses(actions, config.gamma * unit, start.R[0], start.P[0])
        path = CameraPath(actions, config.gamma, R, P)
    else:  # a sampled path is made a little longer than needed, then cut to the video
        traj = sample_trajectory(spec, "revisit", seconds=seconds, fps=fps, seed=config.scene)
        path = path_from_poses(traj.R[:count], traj.P[:count], model)
        path.gamma *= config.gamma
    if len(path.actions) != count:
        raise ValueError(f"the camera path has {len(path.actions)} frames, {count} are needed")
    start_frame = render_start_frame(spec, path.R, path.P, model.resolution)
    prompt = config.prompt if config.prompt is not None else scene_caption(spec)
    return path, start_frame, prompt, spec


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux `ru_maxrss` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def output_paths(config: ExploreConfig) -> dict[str, Path]:
    """Every file the run will write, checked writable before any work.

    Raises:
        ValueError: naming the option (`--out`, `--json`) and why it cannot be written.
    """
    from reverie.io import check_writable

    out = Path(config.out)
    if out.suffix != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {out}")
    paths = {"video": check_writable(out, "--out")}
    if config.scene is not None:
        paths["gt"] = check_writable(out.with_suffix(".gt.mp4"), "--out (ground truth)")
        paths["compare"] = check_writable(out.with_suffix(".compare.mp4"), "--out (compare)")
    if config.json is not None:
        paths["json"] = check_writable(config.json, "--json")
        if paths["json"].resolve() in {p.resolve() for k, p in paths.items() if k != "json"}:
            raise ValueError(f"--json {config.json} is also a video output; give another name")
    return paths


def explore(config: ExploreConfig) -> dict[str, Any]:
    """Run one exploration; write the videos and the metrics JSON; return the metrics.

    The options are checked when `config` is built and the output paths before the model is
    loaded; the outputs appear together at the end (`reverie.io.atomic_outputs`) or, on any
    failure or interrupt, not at all. The metrics are described in the module docstring.

    Raises:
        ValueError: an output that cannot be written, an unknown memory policy, a path length
            that is not `1 + frames_per_step * k` frames, a bad trajectory file (naming it).
        FileNotFoundError: a missing start image, trajectory or checkpoint.
    """
    import torch
    from tqdm import tqdm

    from reverie.data.video import VIEWER_PIXEL_FORMAT, write_mp4
    from reverie.engine import WorldModel, load_image
    from reverie.io import atomic_outputs, atomic_write_json

    paths = output_paths(config)
    torch.set_num_threads(config.threads)
    model = (
        WorldModel.random(config.seed)
        if config.random
        else WorldModel.from_pretrained(config.checkpoint)
    )
    if config.memory not in model.memory_policies:
        raise ValueError(f"unknown memory policy {config.memory!r}; known: {model.memory_policies}")
    count = video_length(config, model)
    if config.image is not None:  # read and checked before the text encoder is loaded
        image, note = load_image(config.image, model.resolution)
        if note:
            print(f"reverie explore: start image {note}", file=sys.stderr)
    path, start_frame, prompt, spec = plan_path(config, model, count)
    if start_frame is not None:
        image = start_frame
    model.encode_prompt(prompt)  # text encoder loaded before the clock starts

    tic = time.perf_counter()
    session = model.start(image, prompt, memory=config.memory, gamma=path.gamma, seed=config.seed)
    frames, first_latency = [session.first_frame[None]], None
    step = model.frames_per_step
    blocks = (path.actions[i : i + step] for i in range(1, count, step))
    with tqdm(total=count - 1, desc="explore", unit="frame", disable=config.quiet) as bar:
        for block in session.stream(blocks):  # denoise k + 1 while decoding k
            frames.append(block)
            if first_latency is None:
                first_latency = time.perf_counter() - tic
            bar.update(step)
    wall = time.perf_counter() - tic
    video = np.concatenate(frames)
    stats = session.stats()
    generated = stats["generated_frames"]
    metrics: dict[str, Any] = {
        "fps_end_to_end": generated / wall,
        "fps_denoise": generated / stats["denoise_s"] if stats["denoise_s"] else None,
        "first_frame_latency_s": first_latency,
        "peak_rss_mb": peak_rss_mb(),
        "cache_tokens": stats["cache_tokens"],
        "cache_bytes": stats["cache_bytes"],
        "frames": int(len(video)),
        "memory_policy": config.memory,
        "checkpoint": "random" if config.random else model.source,
        "gamma": path.gamma,
        "prompt": prompt,
        "seconds_of_video": len(video) / model.fps,
        "timings_s": {k: stats[k] for k in ("denoise_s", "decode_s", "encode_s")},
    }
    with atomic_outputs() as outs:  # every file, or none of them
        mp4 = {"fps": model.fps, "pixel_format": VIEWER_PIXEL_FORMAT, "crf": 18}
        write_mp4(outs.path(paths["video"]), video, **mp4)
        if spec is not None:
            from reverie.evaluation.metrics import finite_mean, frame_psnr, frame_ssim
            from reverie.worlds.render import SceneRenderer

            with SceneRenderer(spec, model.resolution, model.resolution) as renderer:
                gt, _ = renderer.render_trajectory(path.R, path.P)  # (T, H, W, 3) uint8
            write_mp4(outs.path(paths["gt"]), gt, **mp4)
            side = np.concatenate([video, gt], axis=2)  # (T, H, 2W, 3): generated | GT
            write_mp4(outs.path(paths["compare"]), side, **mp4)
            psnr, ssim = frame_psnr(video, gt), frame_ssim(video, gt)
            metrics.update(
                scene=config.scene,
                psnr=[None if not np.isfinite(v) else float(v) for v in psnr],
                ssim=[float(v) for v in ssim],
                psnr_mean=finite_mean(psnr[1:]),
                ssim_mean=float(np.mean(ssim[1:])),
            )
        metrics["outputs"] = {k: str(v) for k, v in paths.items() if k != "json"}
        if "json" in paths:
            atomic_write_json(outs.path(paths["json"]), metrics)
    return metrics


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `reverie explore` on the CLI's subparsers."""
    from reverie.memory import policy_names

    p = sub.add_parser(
        "explore",
        help="stream the world model along a camera path (videos + metrics)",
        description=__doc__.split("\n\n")[2],
    )
    src = p.add_argument_group("start")
    src.add_argument("--scene", type=int, help="procedural scene seed (renders start + GT)")
    src.add_argument(
        "--world",
        default="mixed",
        choices=("mixed", "indoor", "open"),
        help="scene family of --scene (default mixed)",
    )
    src.add_argument("--image", help="start image (PNG/JPEG), resized/cropped to the model")
    src.add_argument("--prompt", help="text description (default: the scene's caption)")
    path = p.add_argument_group("camera path")
    path.add_argument("--actions", help='action script, e.g. "pan_left*16 dolly_in+pan_right*8"')
    path.add_argument("--trajectory", help="camera path JSON {R: (T,3,3), P: (T,3)}")
    path.add_argument(
        "--gamma", type=float, default=1.0, help="velocity multiplier, 0.05-4 (RELIC §5.2)"
    )
    path.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"video length (default: the length of --actions / --trajectory, else "
        f"{DEFAULT_SECONDS:g}); at most {MAX_FRAMES} frames",
    )
    p.add_argument("--memory", default="relic", choices=policy_names(), help="memory policy")
    p.add_argument("--checkpoint", help="world model directory (default: the shipped model)")
    p.add_argument("--random", action="store_true", help="untrained tiny model (testing)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per stream thread (default 1: denoising and VAE decoding already "
        "run on two threads; more oversubscribes a 2-core CPU)",
    )
    p.add_argument("--out", default="out.mp4", help="output video (default out.mp4)")
    p.add_argument("--json", help="metrics JSON path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run, on_interrupt="no output was written")


def _run(args: argparse.Namespace) -> int:
    """The CLI shell: the options become an `ExploreConfig`; print a summary of the metrics."""
    config = ExploreConfig(**{f.name: getattr(args, f.name) for f in fields(ExploreConfig)})
    metrics = explore(config)
    summary = {
        k: metrics[k]
        for k in (
            "frames",
            "fps_end_to_end",
            "fps_denoise",
            "first_frame_latency_s",
            "cache_tokens",
            "memory_policy",
        )
    }
    if "psnr_mean" in metrics:
        summary.update(psnr_mean=metrics["psnr_mean"], ssim_mean=metrics["ssim_mean"])
    summary["outputs"] = metrics["outputs"]
    print(json.dumps(summary, default=float))
    return 0
