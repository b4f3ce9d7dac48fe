"""`reverie eval speed`: the streaming benchmark per memory policy (RELIC §4.5, MAG §4.1).

For each policy, one session streams ``minutes`` of video from the first frame of held-out
scene 0 (scene caption as prompt), driven by the commanded actions of a ``mixed`` camera path
in that scene (looped when the stream is longer than the path). The session streams with
``Session.stream`` (block k is VAE-decoded on a second thread while block k + 1 is denoised, as
``reverie explore`` does); each step's "latency" is the wall time between consecutive frame
blocks reaching the caller (uint8 frames on the host, so a GPU is synchronised); the first
``warmup_steps`` steps are excluded from the latency statistics. About once per
``sample_every_s`` seconds of video the cache size (``Session.stats``: tokens and bytes the
policy holds) is recorded against the horizon.

Reported per policy: mean / p50 / p95 / max step latency (s), FPS (video frames per second of
wall time = ``frames_per_step / mean latency``), the real-time factor (FPS / the model's fps),
the final and the largest cache size, and the curve ``[{t_s, cache_tokens, cache_bytes,
cache_frames, latency_s, rss_bytes}]``. For long streams (issue 11), ``first_minute`` and
``last_minute`` give FPS and step-time p50 / p95 over the first and the last minute of video
(warm-up excluded), ``last_over_first_p50`` their ratio, and ``rss_growth`` the process RSS at
the end over the RSS at 1 minute (the process's current resident set from ``/proc``, Linux).
``wall_limit_s`` stops a policy's stream early (``stopped_early``; e.g. ``full``, whose cost
grows with the stream); its statistics then cover what was streamed.

First and last minute are an hour-scale comparison on a machine whose speed can drift by 10-20%
between minutes (other tenants, clocks), so ``side_by_side`` also measures the same thing in one
run: when the stream is at least twice ``compare_age_s`` long, a second session of the same
policy is streamed to ``compare_age_s`` (1 minute), then ``compare_rounds`` rounds alternate
``compare_steps`` steps of the long session and of the 1-minute one (the first step after each
switch dropped). Reported: both step-time medians, ``long_over_reference_p50`` and the ages
(video seconds) of both sessions when the comparison ends.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from reverie.evaluation.heldout import gamma_for, sample_heldout_path
from reverie.evaluation.policies import default_policies

PATH_SECONDS = 30.0
"""Length of the camera path whose actions drive the stream (looped), seconds."""


@dataclass(frozen=True)
class SpeedConfig:
    """Settings of the streaming benchmark.

    Attributes:
        minutes: video length streamed per policy, minutes.
        policies: memory policies to time (default: every registered one).
        warmup_steps: first steps left out of the latency statistics.
        sample_every_s: cache-size sampling interval, seconds of video.
        seed: generation seed.
        kv_dtype: KV-cache storage dtype (`reverie.engine.world_model.KV_DTYPES`).
        wall_limit_s: stop a policy's stream after this many wall seconds (None: never).
        compare_age_s: age of the reference session of ``side_by_side`` (video seconds).
        compare_rounds, compare_steps: alternations of ``side_by_side`` and steps per turn.
    """

    minutes: float = 1.0
    policies: tuple[str, ...] = field(default_factory=default_policies)
    warmup_steps: int = 3
    sample_every_s: float = 1.0
    seed: int = 0
    kv_dtype: str = "auto"
    wall_limit_s: float | None = None
    compare_age_s: float = 60.0
    compare_rounds: int = 5
    compare_steps: int = 20

    def __post_init__(self) -> None:
        if not self.minutes > 0 or not self.sample_every_s > 0 or not self.policies:
            raise ValueError("need --minutes > 0, sample_every_s > 0 and at least one policy")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.wall_limit_s is not None and not self.wall_limit_s > 0:
            raise ValueError(f"--wall-limit-minutes must be > 0, got {self.wall_limit_s / 60}")
        if not self.compare_age_s > 0 or min(self.compare_rounds, self.compare_steps - 1) < 1:
            raise ValueError("need compare_age_s > 0, compare_rounds >= 1, compare_steps >= 2")


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def window_stats(latencies: np.ndarray, times: np.ndarray, start_s: float, end_s: float, fs):
    """FPS and step-time p50 / p95 of the steps whose video ends in ``(start_s, end_s]``."""
    lat = latencies[(times > start_s) & (times <= end_s)]
    if lat.size == 0:
        return None
    return {
        "from_s": start_s,
        "to_s": end_s,
        "steps": int(lat.size),
        "fps": fs / float(lat.mean()),
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
    }


def stream(
    model,
    image,
    prompt: str,
    actions: np.ndarray,
    gamma: float,
    policy: str,
    steps: int,
    cfg: SpeedConfig,
) -> dict:
    """Time ``steps`` steps of one session; returns latencies, curve and summary.

    Shapes: image ``(res, res, 3)`` uint8; actions ``(N, 13)`` float32, ``N >= frames_per_step``
    (looped).
    """
    fs = model.frames_per_step

    def start():
        return model.start(
            image, prompt, memory=policy, gamma=gamma, seed=cfg.seed, kv_dtype=cfg.kv_dtype
        )

    def action_blocks():  # the path's commanded actions, looped, one step at a time
        n = (len(actions) - 1) // fs * fs  # whole steps of the path after its first frame
        k = 0
        while True:
            yield actions[1 + (k * fs) % n : 1 + (k * fs) % n + fs]
            k += 1

    session = start()
    every = max(1, round(cfg.sample_every_s * model.fps / fs))
    latencies, curve = [], []
    frames = session.stream(action_blocks())  # denoise k + 1 while decoding k
    begin = tic = time.perf_counter()
    stopped_early = False
    for k in range(steps):
        next(frames)
        now = time.perf_counter()
        latencies.append(now - tic)  # wall time per step in the pipelined stream
        tic = now
        over = cfg.wall_limit_s is not None and now - begin > cfg.wall_limit_s
        if k % every == every - 1 or k == steps - 1 or over:
            st = session.stats()
            curve.append(
                {
                    "t_s": st["frames"] / model.fps,
                    "cache_tokens": int(st["cache_tokens"]),
                    "cache_bytes": int(st["cache_bytes"]),
                    "cache_frames": int(st["cache_frames"]),
                    "latency_s": latencies[-1],
                    "rss_bytes": current_rss_bytes(),
                }
            )
        if over and k < steps - 1:
            stopped_early = True
            break
    side_by_side = None
    if len(latencies) * fs / model.fps >= 2 * cfg.compare_age_s:
        side_by_side = compare(model, session, frames, start(), action_blocks(), cfg)
    frames.close()
    session.close()
    done = len(latencies)
    video_s = (1 + np.arange(done)) * fs / model.fps  # video time at the end of each step
    lat_all = np.asarray(latencies)
    lat = np.asarray(latencies[cfg.warmup_steps :] or latencies)
    mean = float(lat.mean())
    total_s = done * fs / model.fps
    timed = video_s > video_s[min(cfg.warmup_steps, done - 1)] - 1e-9
    first = window_stats(lat_all[timed], video_s[timed], 0.0, min(60.0, total_s), fs)
    last = window_stats(lat_all[timed], video_s[timed], max(0.0, total_s - 60.0), total_s, fs)
    rss_1min = next((c["rss_bytes"] for c in curve if c["t_s"] >= 60.0), None)
    rss_end = curve[-1]["rss_bytes"]
    return {
        "steps": done,
        "stopped_early": stopped_early,
        "first_minute": first,
        "last_minute": last,
        "last_over_first_p50": (
            last["latency_p50_s"] / first["latency_p50_s"] if first and last else None
        ),
        "rss_1min_bytes": rss_1min,
        "rss_end_bytes": rss_end,
        "rss_growth": rss_end / rss_1min if rss_1min and rss_end else None,
        "seconds": total_s,
        "latency_mean_s": mean,
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "latency_max_s": float(lat.max()),
        "fps": fs / mean,
        "realtime_factor": fs / mean / model.fps,
        "final_cache_tokens": curve[-1]["cache_tokens"],
        "final_cache_bytes": curve[-1]["cache_bytes"],
        "max_cache_tokens": max(c["cache_tokens"] for c in curve),
        "max_cache_bytes": max(c["cache_bytes"] for c in curve),
        "side_by_side": side_by_side,
        "curve": curve,
    }


def compare(model, long_session, long_frames, reference, reference_blocks, cfg) -> dict:
    """``side_by_side`` of the module docstring: the long session (``long_frames``: its
    ``Session.stream`` generator) against a fresh ``reference`` session streamed to
    ``cfg.compare_age_s``, alternating; closes the reference session."""
    fs = model.frames_per_step
    ref_frames = reference.stream(reference_blocks)
    for _ in range(max(1, round(cfg.compare_age_s * model.fps / fs))):
        next(ref_frames)
    times: dict[str, list[float]] = {"long": [], "reference": []}
    for _ in range(cfg.compare_rounds):
        for name, frames in (("long", long_frames), ("reference", ref_frames)):
            tic = time.perf_counter()
            for i in range(cfg.compare_steps):
                next(frames)
                now = time.perf_counter()
                if i:  # the first step after a switch starts on cold CPU caches
                    times[name].append(now - tic)
                tic = now
    long_p50 = float(np.median(times["long"]))
    ref_p50 = float(np.median(times["reference"]))
    out = {
        "long_p50_s": long_p50,
        "reference_p50_s": ref_p50,
        "long_over_reference_p50": long_p50 / ref_p50,
        "long_age_s": long_session.stats()["frames"] / model.fps,
        "reference_age_s": reference.stats()["frames"] / model.fps,
        "rounds": cfg.compare_rounds,
        "steps_per_round": cfg.compare_steps - 1,
    }
    ref_frames.close()
    reference.close()
    return out


def run_speed(model, cfg: SpeedConfig, *, progress: bool = True) -> dict:
    """Stream ``cfg.minutes`` of video per policy; returns the JSON-serialisable result.

    Raises:
        ValueError: an unknown policy.
    """
    import torch
    from tqdm import tqdm

    from reverie.camera import poses_to_actions
    from reverie.worlds.caption import scene_caption
    from reverie.worlds.render import render_start_frame

    unknown = [p for p in cfg.policies if p not in model.memory_policies]
    if unknown:
        raise ValueError(
            f"unknown memory policies {unknown}; this model has {list(model.memory_policies)}"
        )
    fs = model.frames_per_step
    steps = max(1, math.ceil(cfg.minutes * 60 * model.fps / fs))
    spec, traj = sample_heldout_path(0, "mixed", PATH_SECONDS, model.fps)
    image = render_start_frame(spec, traj.R, traj.P, model.resolution)  # (res, res, 3) uint8
    caption = scene_caption(spec)
    actions, scale = poses_to_actions(traj.R, traj.P)
    result: dict = {
        "benchmark": "speed",
        "config": asdict(cfg),
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "policies": {},
    }
    for policy in tqdm(cfg.policies, desc="speed", disable=not progress):
        result["policies"][policy] = stream(
            model, image, caption, actions, gamma_for(model, scale), policy, steps, cfg
        )
    return result


def format_table(result: dict) -> str:
    """Short text table (one row per policy)."""
    lines = [
        f"{'policy':<10} {'FPS':>7} {'x real':>6} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'cache tok':>9} {'cache MB':>8} {'video s':>7} {'last/1st':>8} {'RSS x':>6} "
        f"{'long/1min':>9}"
    ]
    for name, r in result["policies"].items():
        ratio, growth = r.get("last_over_first_p50"), r.get("rss_growth")
        side = (r.get("side_by_side") or {}).get("long_over_reference_p50")
        lines.append(
            f"{name:<10} {r['fps']:7.2f} {r['realtime_factor']:6.2f} "
            f"{1e3 * r['latency_p50_s']:7.1f} {1e3 * r['latency_p95_s']:7.1f} "
            f"{r['max_cache_tokens']:9d} {r['max_cache_bytes'] / 2**20:8.2f} {r['seconds']:7.1f} "
            f"{'-' if ratio is None else f'{ratio:.3f}':>8} "
            f"{'-' if growth is None else f'{growth:.3f}':>6} "
            f"{'-' if side is None else f'{side:.3f}':>9}"
            + (" (stopped early)" if r.get("stopped_early") else "")
        )
    return "\n".join(lines)
