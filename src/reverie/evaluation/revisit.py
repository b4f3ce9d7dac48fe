"""`reverie eval revisit`: MAG-Bench-style revisit consistency (MAG arXiv 2512.18741 §3.6, §4.1).

MAG-Bench feeds the first part of a video whose camera leaves a place and comes back into the
KV cache ("memorize") and lets the model generate the rest ("generate"); the generated frames
are scored against the ground truth and against the history. Our episodes come from held-out
procedural scenes (:mod:`reverie.evaluation.heldout`) with RELIC-style ``revisit`` camera paths
(:func:`reverie.worlds.trajectory.sample_trajectory`) instead of MAG's reverse-played videos:

1. **Pick the event.** :func:`reverie.worlds.revisit.revisit_mask` flags frames ``t`` that come
   back (within 0.5 m and 20 deg) to an earlier frame ``s`` at least ``min_gap_s`` earlier,
   after the camera left ``s``'s viewpoint (>= 90 deg or >= 2 m away). The first revisit run
   ``[a, b)`` with at least ``min_revisit_frames`` frames is the event; its *first visit* is
   ``s0 = a - gap[a]`` and the camera has *left* at ``u0``, the first frame after ``s0`` that is
   >= 90 deg or >= 2 m away from it. Trajectory seeds are tried in order until one has such an
   event that starts after the memorized part.
2. **Memorize** ground-truth frames ``0..m`` with ``m = u0`` rounded up to the model's step grid
   (``frames_per_step``): frame 0 starts the session, frames ``1..m`` go through
   ``Session.observe`` with their commanded actions.
3. **Generate** frames ``m+1 .. end-1`` with ``Session.step`` along the commanded actions
   (``poses_to_actions``, RELIC Algorithm 1; ``gamma`` from :func:`gamma_for` replays the
   ground-truth path exactly), where
   ``end`` is the end of the revisit run rounded to whole steps (frames after the revisit are
   not generated: they test nothing about memory).
4. **Score** (per memory policy, same episodes, same seed):

   - ``gt``: PSNR/SSIM of every generated frame vs the ground truth at the same time;
   - ``revisit_gt``: the same over *revisit frames* only: generated frames in ``[a, b)`` whose
     earliest revisited frame was memorized;
   - ``revisit_history``: revisit frame vs its *history match*, the memorized frame with the
     closest pose (smallest ``|dP| / 0.5 m + angle / 20 deg``, at least ``min_gap_s`` earlier);
   - ``revisit_best_history``: best match over history frames (the memorized frame with the
     highest PSNR) — MAG §4.1's best-match idea restricted to the history;
   - ``best_match_gt``: MAG §4.1 best match: each generated frame is matched to its most
     similar ground-truth frame of the episode (memorized or not) before scoring, so a small
     speed difference does not dominate. MAG matches with LPIPS; we have no LPIPS network and
     match by highest PSNR (lowest MSE) — documented deviation.
   - a curve of revisit-frame PSNR (vs ground truth) against time since the first visit
     (``gap / fps`` seconds), binned by ``curve_bin_s``;
   - the cache size (tokens, bytes) after the memorize phase, at the end, and its maximum.

Two model-free references are reported beside the policies: ``history_oracle`` (the ground-
truth revisit frame vs its history match: how different the two viewpoints are, i.e. the
``revisit_history`` score of a model that renders the revisit perfectly) and
``last_context_frame`` (repeat the last memorized frame: what ignoring the actions scores).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from reverie.evaluation.heldout import GroundTruthEpisode, gamma_for
from reverie.evaluation.metrics import finite_mean, frame_psnr, frame_ssim, psnr_matrix
from reverie.evaluation.policies import default_policies
from reverie.evaluation.revisit_episode import RevisitEpisode, build_episode


@dataclass(frozen=True)
class RevisitConfig:
    """Settings of the revisit benchmark.

    Attributes:
        scenes: number of held-out scenes (indices ``0..scenes-1``).
        seconds: length of the sampled camera path, seconds (the event must fit in it).
        policies: memory policies to compare (names of ``WorldModel.memory_policies``;
            default: every registered one).
        family: trajectory family (``revisit``: deliberate returns, RELIC §3).
        min_gap_s: smallest time between a first visit and its revisit, seconds.
        min_revisit_frames: shortest revisit run accepted as the event, frames.
        max_attempts: trajectory seeds tried per scene before giving up.
        prompt: ``caption`` (the scene caption, as in training) or ``empty``.
        seed: generation seed (identical for every policy: same initial noise).
        curve_bin_s: bin width of the PSNR-vs-time-since-first-visit curve, seconds.
        kv_dtype: KV-cache storage dtype (`reverie.engine.world_model.KV_DTYPES`).
        memorize_until: ``leave`` (the benchmark, step 2) or ``return``: a diagnostic that
            memorizes ground truth up to the last step before the first revisit, so only the
            return leg is generated from a ground-truth context
            (:func:`reverie.evaluation.revisit_episode.find_event`).
    """

    scenes: int = 8
    seconds: float = 20.0
    policies: tuple[str, ...] = field(default_factory=default_policies)
    family: str = "revisit"
    min_gap_s: float = 3.0
    min_revisit_frames: int = 8
    max_attempts: int = 50
    prompt: str = "caption"
    seed: int = 0
    curve_bin_s: float = 1.0
    kv_dtype: str = "auto"
    memorize_until: str = "leave"

    def __post_init__(self) -> None:
        if self.scenes < 1:
            raise ValueError(f"--scenes must be >= 1, got {self.scenes}")
        if not self.seconds > 0 or not self.min_gap_s > 0 or not self.curve_bin_s > 0:
            raise ValueError("seconds, min_gap_s and curve_bin_s must be > 0")
        if not self.policies:
            raise ValueError("--policies must name at least one memory policy")
        if self.prompt not in ("caption", "empty"):
            raise ValueError(f"--prompt must be 'caption' or 'empty', got {self.prompt!r}")
        if self.min_revisit_frames < 1 or self.max_attempts < 1:
            raise ValueError("min_revisit_frames and max_attempts must be >= 1")
        if self.memorize_until not in ("leave", "return"):
            raise ValueError(
                f"--memorize-until must be 'leave' or 'return', got {self.memorize_until!r}"
            )


def generate(model, ep: RevisitEpisode, policy: str, cfg: RevisitConfig) -> tuple[np.ndarray, dict]:
    """Memorize ground truth up to ``m``, then generate frames ``m+1..end-1`` (steps 2-3).

    Shapes: returns generated frames ``(end - m - 1, res, res, 3)`` uint8 and a dict of cache
    statistics (``memorized``, ``final``, ``max_cache_tokens``, ``max_cache_bytes``) and timings.
    """
    g, m, fs = ep.gt, ep.memorize_end, model.frames_per_step
    prompt = g.caption if cfg.prompt == "caption" else ""
    t0 = time.perf_counter()
    session = model.start(
        g.frames[0],
        prompt,
        memory=policy,
        gamma=gamma_for(model, g.action_scale),
        seed=cfg.seed,
        kv_dtype=cfg.kv_dtype,
    )
    if m > 0:
        session.observe(g.frames[1 : m + 1], g.actions[1 : m + 1])
    memorized = session.stats()
    t1 = time.perf_counter()
    out, tokens, nbytes = [], [memorized["cache_tokens"]], [memorized["cache_bytes"]]
    for j in range(m + 1, ep.end, fs):
        out.append(session.step(g.actions[j : j + fs]))  # (fs, res, res, 3)
        st = session.stats()
        tokens.append(st["cache_tokens"])
        nbytes.append(st["cache_bytes"])
    t2 = time.perf_counter()
    R, P = session.poses
    final = session.stats()
    session.close()
    return np.concatenate(out), {
        "memorized": _cache(memorized),
        "final": _cache(final),
        "max_cache_tokens": int(max(tokens)),
        "max_cache_bytes": int(max(nbytes)),
        "memorize_s": t1 - t0,
        "generate_s": t2 - t1,
        "command_error_m": _command_error(g, R, P),
    }


def _cache(stats: dict) -> dict:
    return {k: int(stats[k]) for k in ("frames", "latent_frames", "cache_tokens", "cache_bytes")}


def _command_error(g: GroundTruthEpisode, R: np.ndarray, P: np.ndarray) -> float:
    """Largest distance (m) between the session's commanded centres and the ground truth's
    (expressed relative to frame 0): ~0 when actions and ``gamma`` invert the path exactly."""
    P = np.asarray(P, dtype=np.float64)
    rel = (g.P[: len(P)] - g.P[0]) @ g.R[0].T  # (T, 3) centres in frame 0's camera frame
    return float(np.max(np.linalg.norm(P - rel, axis=-1)))


def score(ep: RevisitEpisode, gen: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame scores of one generated continuation (step 4 of the module docstring).

    Shapes: gen ``(end - m - 1, H, W, 3)`` uint8 -> dict of ``(end - m - 1,)`` arrays
    (``psnr_gt, ssim_gt, psnr_best_gt, ssim_best_gt``) and ``(N,)`` arrays over revisit frames
    (``psnr_history, ssim_history, psnr_best_history, ssim_best_history``).
    """
    g, m = ep.gt, ep.memorize_end
    truth = g.frames[m + 1 : ep.end]
    rev = ep.revisit_frames - (m + 1)  # (N,) rows of gen
    best_gt = np.argmax(psnr_matrix(gen, g.frames[: ep.end]), axis=1)  # (Tg,)
    best_hist = np.argmax(psnr_matrix(gen[rev], g.frames[: m + 1]), axis=1)  # (N,)
    return {
        "psnr_gt": frame_psnr(gen, truth),
        "ssim_gt": frame_ssim(gen, truth),
        "psnr_best_gt": frame_psnr(gen, g.frames[best_gt]),
        "ssim_best_gt": frame_ssim(gen, g.frames[best_gt]),
        "psnr_history": frame_psnr(gen[rev], g.frames[ep.history_match]),
        "ssim_history": frame_ssim(gen[rev], g.frames[ep.history_match]),
        "psnr_best_history": frame_psnr(gen[rev], g.frames[best_hist]),
        "ssim_best_history": frame_ssim(gen[rev], g.frames[best_hist]),
    }


def summarize(ep_scores: list[dict[str, np.ndarray]], eps: list[RevisitEpisode]) -> dict:
    """Episode-mean metrics (each scene counts once; PSNR ``inf`` capped, see metrics.py)."""
    rev = [ep.revisit_frames - (ep.memorize_end + 1) for ep in eps]

    def mean(key: str, revisit: bool = False) -> float:
        vals = [s[key][r] if revisit else s[key] for s, r in zip(ep_scores, rev, strict=True)]
        return float(np.mean([finite_mean(v) for v in vals]))

    return {
        "psnr_gt": mean("psnr_gt"),
        "ssim_gt": mean("ssim_gt"),
        "psnr_best_gt": mean("psnr_best_gt"),
        "ssim_best_gt": mean("ssim_best_gt"),
        "revisit_psnr_gt": mean("psnr_gt", True),
        "revisit_ssim_gt": mean("ssim_gt", True),
        "revisit_psnr_best_gt": mean("psnr_best_gt", True),
        "revisit_psnr_history": mean("psnr_history"),
        "revisit_ssim_history": mean("ssim_history"),
        "revisit_psnr_best_history": mean("psnr_best_history"),
        "revisit_ssim_best_history": mean("ssim_best_history"),
    }


def psnr_curve(
    ep_scores: list[dict[str, np.ndarray]], eps: list[RevisitEpisode], bin_s: float
) -> list[dict]:
    """Revisit-frame PSNR vs ground truth, binned by time since the first visit.

    Returns rows ``{"t_s": bin centre, "psnr": mean, "n": frames}`` (frames pooled over
    episodes), ordered by time.
    """
    t = np.concatenate([ep.since_first_visit_s for ep in eps])
    p = np.concatenate(
        [
            s["psnr_gt"][ep.revisit_frames - (ep.memorize_end + 1)]
            for s, ep in zip(ep_scores, eps, strict=True)
        ]
    )
    bins = np.floor(t / bin_s).astype(np.int64)
    return [
        {"t_s": (b + 0.5) * bin_s, "psnr": finite_mean(p[bins == b]), "n": int(np.sum(bins == b))}
        for b in np.unique(bins)
    ]


def _constant_scores(frame: np.ndarray, ep: RevisitEpisode) -> tuple[float, float, float]:
    """``(PSNR, SSIM over generated frames, PSNR over revisit frames)`` of holding ``frame``.

    Shapes: frame ``(H, W, 3)`` uint8.
    """
    truth = ep.gt.frames[ep.memorize_end + 1 : ep.end]
    held = np.ascontiguousarray(np.broadcast_to(frame, truth.shape))
    truth_rev = ep.gt.frames[ep.revisit_frames]
    return (
        finite_mean(frame_psnr(held, truth)),
        float(np.mean(frame_ssim(held, truth))),
        finite_mean(frame_psnr(held[: len(truth_rev)], truth_rev)),
    )


def baselines(eps: list[RevisitEpisode]) -> dict:
    """Model-free references (module docstring): ``history_oracle``, and three frames held over
    the generated part: ``last_context_frame`` (the last memorized frame), ``start_frame``
    (frame 0) and ``mean_colour`` (the memorized frames' mean colour, a flat frame)."""
    oracle_p, oracle_s = [], []
    held: dict[str, list[tuple[float, float, float]]] = {
        "last_context_frame": [],
        "start_frame": [],
        "mean_colour": [],
    }
    for ep in eps:
        g, m = ep.gt, ep.memorize_end
        truth_rev = g.frames[ep.revisit_frames]
        hist = g.frames[ep.history_match]
        oracle_p.append(finite_mean(frame_psnr(truth_rev, hist)))
        oracle_s.append(float(np.mean(frame_ssim(truth_rev, hist))))
        memorized = g.frames[: m + 1]
        colour = memorized.reshape(-1, 3).mean(0).round().astype(np.uint8)  # (3,)
        flat = np.broadcast_to(colour, memorized.shape[1:])  # (H, W, 3)
        held["last_context_frame"].append(_constant_scores(g.frames[m], ep))
        held["start_frame"].append(_constant_scores(g.frames[0], ep))
        held["mean_colour"].append(_constant_scores(flat, ep))
    out: dict = {
        "history_oracle": {
            "revisit_psnr_history": float(np.mean(oracle_p)),
            "revisit_ssim_history": float(np.mean(oracle_s)),
        }
    }
    for name, rows in held.items():
        p, s, rp = (float(np.mean(col)) for col in zip(*rows, strict=True))
        out[name] = {"psnr_gt": p, "ssim_gt": s, "revisit_psnr_gt": rp}
    return out


def run_revisit(model, cfg: RevisitConfig, *, progress: bool = True) -> dict:
    """Run the benchmark for every policy of ``cfg`` on ``cfg.scenes`` held-out scenes.

    Returns the JSON-serialisable result (see docs/evaluation.md for the layout).

    Raises:
        ValueError: an unknown policy, or a scene without a usable revisit.
    """
    from tqdm import tqdm

    unknown = [p for p in cfg.policies if p not in model.memory_policies]
    if unknown:
        raise ValueError(
            f"unknown memory policies {unknown}; this model has {list(model.memory_policies)}"
        )
    eps = [
        build_episode(
            i,
            family=cfg.family,
            seconds=cfg.seconds,
            min_gap_s=cfg.min_gap_s,
            min_revisit_frames=cfg.min_revisit_frames,
            max_attempts=cfg.max_attempts,
            fps=model.fps,
            resolution=model.resolution,
            frames_per_step=model.frames_per_step,
            memorize_until=cfg.memorize_until,
        )
        for i in tqdm(range(cfg.scenes), desc="revisit episodes", disable=not progress)
    ]
    result: dict = {
        "benchmark": "revisit",
        "config": asdict(cfg),
        "episodes": [ep.summary() for ep in eps],
        "baselines": baselines(eps),
        "policies": {},
    }
    bar = tqdm(total=len(cfg.policies) * len(eps), desc="generate", disable=not progress)
    all_scores: dict[str, list[dict[str, np.ndarray]]] = {}
    for policy in cfg.policies:
        scores, runs = [], []
        for ep in eps:
            gen, info = generate(model, ep, policy, cfg)
            scores.append(score(ep, gen))
            runs.append(info)
            bar.update(1)
        all_scores[policy] = scores
        result["policies"][policy] = {
            "summary": {
                **summarize(scores, eps),
                "cache_tokens": int(np.mean([r["final"]["cache_tokens"] for r in runs])),
                "cache_bytes": int(np.mean([r["final"]["cache_bytes"] for r in runs])),
                "max_cache_tokens": int(max(r["max_cache_tokens"] for r in runs)),
                "max_cache_bytes": int(max(r["max_cache_bytes"] for r in runs)),
                "generate_s_per_frame": float(
                    sum(r["generate_s"] for r in runs)
                    / sum(ep.end - ep.memorize_end - 1 for ep in eps)
                ),
            },
            "curve": psnr_curve(scores, eps, cfg.curve_bin_s),
            "episodes": [
                {**r, **{k: _floats(v) for k, v in s.items()}}
                for r, s in zip(runs, scores, strict=True)
            ],
        }
    bar.close()
    if "relic" in all_scores and "window" in all_scores:
        diff = np.array(
            [
                finite_mean(a["psnr_gt"][ep.revisit_frames - ep.memorize_end - 1])
                - finite_mean(b["psnr_gt"][ep.revisit_frames - ep.memorize_end - 1])
                for a, b, ep in zip(all_scores["relic"], all_scores["window"], eps, strict=True)
            ]
        )
        result["relic_vs_window"] = {
            "revisit_psnr_gt_diff_db": float(np.mean(diff)),
            "episodes_relic_better": int(np.sum(diff > 0)),
            "episodes": len(diff),
        }
    return result


def _floats(x: np.ndarray) -> list[float | None]:
    """JSON-safe list: ``inf`` (identical frames) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]


def format_table(result: dict) -> str:
    """Short text table of a revisit result (one row per policy)."""
    head = (
        f"{'policy':<10} {'PSNR gt':>8} {'rev gt':>8} {'rev hist':>8} {'SSIM hist':>9} "
        f"{'best hist':>9} {'best gt':>8} {'cache tok':>9} {'cache MB':>8}"
    )
    rows = [head]
    for name, p in result["policies"].items():
        s = p["summary"]
        rows.append(
            f"{name:<10} {s['psnr_gt']:8.2f} {s['revisit_psnr_gt']:8.2f} "
            f"{s['revisit_psnr_history']:8.2f} {s['revisit_ssim_history']:9.3f} "
            f"{s['revisit_psnr_best_history']:9.2f} {s['psnr_best_gt']:8.2f} "
            f"{s['max_cache_tokens']:9d} {s['max_cache_bytes'] / 2**20:8.2f}"
        )
    b = result["baselines"]
    for label, key in (
        ("(last ctx)", "last_context_frame"),
        ("(start)", "start_frame"),
        ("(mean col)", "mean_colour"),
    ):
        if key in b:
            rows.append(f"{label:<10} {b[key]['psnr_gt']:8.2f} {b[key]['revisit_psnr_gt']:8.2f}")
    rows.append(
        f"{'(oracle)':<10} {'':8} {'':8} {b['history_oracle']['revisit_psnr_history']:8.2f} "
        f"{b['history_oracle']['revisit_ssim_history']:9.3f}"
    )
    if "relic_vs_window" in result:
        r = result["relic_vs_window"]
        rows.append(
            f"relic - window revisit PSNR: {r['revisit_psnr_gt_diff_db']:+.2f} dB "
            f"(relic better on {r['episodes_relic_better']}/{r['episodes']} scenes)"
        )
    return "\n".join(rows)
