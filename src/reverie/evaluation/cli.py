"""`reverie eval`: benchmarks of a world model; every command writes JSON (docs/evaluation.md).

    reverie eval revisit --checkpoint DIR --scenes 8 --seconds 20 \\
        --policies full,window,relic,mag,retrieval --out benchmarks/results/revisit.json \\
        --training-manifest /work/train/data/worlds
    reverie eval train-probe --data /work/train/data/worlds --out benchmarks/pose_probe --threads 1
    reverie eval actions --checkpoint DIR --probe benchmarks/pose_probe --scenes 8 \\
        --out benchmarks/results/actions.json
    reverie eval follow --checkpoint DIR --scenes 16 --out benchmarks/results/follow.json
    reverie eval speed --checkpoint DIR --minutes 2 --out benchmarks/results/speed.json
    # CPU smoke test without weights:
    reverie eval revisit --random --scenes 1 --seconds 8 --min-gap 1 --policies window,relic \\
        --out /tmp/revisit.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reverie.evaluation.policies import default_policies
from reverie.io import atomic_write_json, check_writable

NO_OUTPUT = "no output was written"  # Ctrl-C: the JSON is written (atomically) at the end


def _policy_help() -> str:
    return f"comma-separated memory policies ({', '.join(default_policies())})"


def _policies(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise argparse.ArgumentTypeError("--policies needs at least one name")
    return names


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--checkpoint",
        default=None,
        help="world model directory (WorldModel.save_pretrained); default: the shipped model",
    )
    g.add_argument("--random", action="store_true", help="untrained tiny model (smoke tests)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_model_args(args: argparse.Namespace) -> None:
    """Checks of the shared options before any work: ``--out`` writable, ``--threads``,
    ``--device`` available.

    Raises:
        ValueError: naming the option.
    """
    from reverie.engine.world_model import check_device

    check_writable(args.out, "--out")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_device(args.device)


def load_model(args: argparse.Namespace):
    """The model of ``--checkpoint`` / ``--random`` (FileNotFoundError names a missing one)."""
    import torch

    from reverie.engine import WorldModel

    check_model_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.random:
        if args.device != "cpu":
            raise ValueError("--random builds a CPU model; drop --device")
        return WorldModel.random(seed=0)
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    return WorldModel.from_pretrained(args.checkpoint, device=args.device)


def _write(path: str, result: dict, model, args: argparse.Namespace, extra: dict | None = None):
    from reverie.evaluation.heldout import EVAL_SCENE_SEED_BASE, model_info

    result = {
        **result,
        "model": model_info(model),
        "heldout_scene_seed_base": EVAL_SCENE_SEED_BASE,
        **(extra or {}),
    }
    atomic_write_json(path, result)
    return result


def _heldout_model(args: argparse.Namespace, scenes: int):
    """Checks before any work (shared options, held-out scenes not in ``--training-manifest``),
    then the model."""
    from reverie.evaluation.heldout import check_disjoint, heldout_scene_seed

    check_model_args(args)
    check_disjoint([heldout_scene_seed(i) for i in range(scenes)], args.training_manifest)
    return load_model(args)


def _report(args: argparse.Namespace, result: dict, model, table: str, extra: dict) -> int:
    """Write the JSON (with the model and ``extra``), print ``table``; exit code 0."""
    _write(args.out, result, model, args, {"training_manifest": args.training_manifest, **extra})
    print(table)
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------- revisit
def _add_revisit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "revisit",
        help="MAG-Bench-style revisit consistency per memory policy",
        description="Memorize ground truth until the camera has left a place, generate the "
        "return, score PSNR/SSIM vs ground truth and vs the history (MAG §3.6, §4.1).",
    )
    _add_model_args(p)
    p.add_argument("--scenes", type=int, default=8, help="held-out scenes (default 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="camera path length (default 20)")
    p.add_argument(
        "--policies", type=_policies, default=",".join(default_policies()), help=_policy_help()
    )
    p.add_argument("--min-gap", type=float, default=3.0, help="min seconds before a revisit")
    p.add_argument("--max-attempts", type=int, default=50, help="trajectory seeds per scene")
    p.add_argument("--prompt", choices=("caption", "empty"), default="caption")
    p.add_argument(
        "--memorize-until",
        choices=("leave", "return"),
        default="leave",
        help="leave: the benchmark; return: diagnostic, memorize ground truth up to the return",
    )
    _add_kv_dtype(p)
    p.add_argument(
        "--training-manifest",
        default=None,
        help="training dataset dir or manifest.jsonl: refuse held-out scenes that are in it",
    )
    p.set_defaults(func=_revisit, on_interrupt=NO_OUTPUT)


def _revisit(args: argparse.Namespace) -> int:
    from reverie.evaluation.revisit import RevisitConfig, format_table, run_revisit

    cfg = RevisitConfig(
        scenes=args.scenes,
        seconds=args.seconds,
        policies=args.policies if isinstance(args.policies, tuple) else _policies(args.policies),
        min_gap_s=args.min_gap,
        max_attempts=args.max_attempts,
        prompt=args.prompt,
        seed=args.seed,
        kv_dtype=args.kv_dtype,
        memorize_until=args.memorize_until,
    )
    model = _heldout_model(args, cfg.scenes)
    result = run_revisit(model, cfg, progress=not args.no_progress)
    return _report(args, result, model, format_table(result), {})


# ---------------------------------------------------------------------------------- actions
def _add_actions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "actions",
        help="action accuracy: RPE of the probe-recovered trajectory (RELIC §5.3)",
        description="Generate along commanded camera paths, recover the trajectory with the "
        "pose probe, Sim(3)-align to the commanded one, report RPE translation / rotation.",
    )
    _add_model_args(p)
    p.add_argument("--probe", required=True, help="pose probe dir (reverie eval train-probe)")
    p.add_argument("--scenes", type=int, default=8, help="held-out scenes (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="path length (default 10)")
    p.add_argument("--policies", type=_policies, default="relic", help=_policy_help())
    p.add_argument("--prompt", choices=("caption", "empty"), default="caption")
    p.add_argument("--training-manifest", default=None, help="as for `eval revisit`")
    p.set_defaults(func=_actions, on_interrupt=NO_OUTPUT)


def _actions(args: argparse.Namespace) -> int:
    from reverie.evaluation.actions import ActionsConfig, format_table, run_actions
    from reverie.evaluation.heldout import check_disjoint, heldout_scene_seed
    from reverie.evaluation.probe import load_probe

    cfg = ActionsConfig(
        scenes=args.scenes,
        seconds=args.seconds,
        policies=args.policies if isinstance(args.policies, tuple) else _policies(args.policies),
        prompt=args.prompt,
        seed=args.seed,
    )
    check_model_args(args)
    check_disjoint([heldout_scene_seed(i) for i in range(cfg.scenes)], args.training_manifest)
    probe = load_probe(args.probe)
    model = load_model(args)
    result = run_actions(model, probe, cfg, progress=not args.no_progress)
    _write(
        args.out,
        result,
        model,
        args,
        {"probe_dir": str(args.probe), "training_manifest": args.training_manifest},
    )
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------- follow
def _add_follow(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "follow",
        help="does the model keep the start image and move it with the camera?",
        description="From frame 0 of held-out scenes, generate along the commanded camera path "
        "and score PSNR/SSIM per second against ground truth, next to the tokenizer's round "
        "trip, 'repeat the start frame' and 'mean colour' (reverie.evaluation.follow).",
    )
    _add_model_args(p)
    p.add_argument("--scenes", type=int, default=8, help="held-out scenes (default 8)")
    p.add_argument("--seconds", type=float, default=4.0, help="path length (default 4)")
    p.add_argument("--policy", default="window", help="memory policy (default window)")
    p.add_argument(
        "--family",
        choices=("random", "revisit", "mixed"),
        default="random",
        help="camera path family (default random)",
    )
    p.add_argument("--training-manifest", default=None, help="as for `eval revisit`")
    p.set_defaults(func=_follow, on_interrupt=NO_OUTPUT)


def _follow(args: argparse.Namespace) -> int:
    from reverie.evaluation.follow import FollowConfig, format_table, run_follow

    cfg = FollowConfig(
        scenes=args.scenes,
        seconds=args.seconds,
        policy=args.policy,
        seed=args.seed,
        family=args.family,
    )
    model = _heldout_model(args, cfg.scenes)
    if cfg.policy not in model.memory_policies:
        raise ValueError(f"--policy {cfg.policy!r}: known {', '.join(model.memory_policies)}")
    result = run_follow(model, cfg, progress=not args.no_progress)
    return _report(args, result, model, format_table(result), {})


# ---------------------------------------------------------------------------------- speed
def _add_speed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "speed",
        help="streaming benchmark per memory policy (FPS, latency, cache size vs horizon)",
    )
    _add_model_args(p)
    p.add_argument("--minutes", type=float, default=1.0, help="video per policy (default 1)")
    p.add_argument(
        "--policies", type=_policies, default=",".join(default_policies()), help=_policy_help()
    )
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed first steps")
    p.add_argument(
        "--wall-limit-minutes",
        type=float,
        default=None,
        help="stop a policy's stream after this much wall time (e.g. for `full` at long "
        "horizons; reported as stopped early)",
    )
    _add_kv_dtype(p)
    p.set_defaults(func=_speed, on_interrupt=NO_OUTPUT)


KV_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp8")
"""The names of `reverie.engine.world_model.KV_DTYPES` (kept light: no engine import here)."""


def _add_kv_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kv-dtype",
        choices=KV_DTYPE_CHOICES,
        default="auto",
        help="KV-cache storage dtype (auto: the model's; fp8: E4M3 with per-token scales)",
    )


def _speed(args: argparse.Namespace) -> int:
    from reverie.evaluation.speed import SpeedConfig, format_table, run_speed

    cfg = SpeedConfig(
        minutes=args.minutes,
        policies=args.policies if isinstance(args.policies, tuple) else _policies(args.policies),
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        kv_dtype=args.kv_dtype,
        wall_limit_s=None if args.wall_limit_minutes is None else 60 * args.wall_limit_minutes,
    )
    check_model_args(args)
    model = load_model(args)
    result = run_speed(model, cfg, progress=not args.no_progress)
    _write(args.out, result, model, args)
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------- probe
def _add_train_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-probe",
        help="train the pose probe used by `eval actions` on a rendered training dataset",
    )
    p.add_argument("--data", required=True, help="`reverie render` dataset of training scenes")
    p.add_argument("--out", required=True, help="output directory (probe.safetensors + .json)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    p.add_argument("--batch", type=int, default=64, help="pairs per step (default 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--stride", type=int, default=4, help="frames between the pair (default 4)")
    p.add_argument("--max-episodes", type=int, default=0, help="read at most N episodes")
    p.add_argument("--heldout-scenes", type=int, default=8, help="held-out GT validation scenes")
    p.add_argument("--heldout-seconds", type=float, default=20.0, help="their path length")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_train_probe)


def _train_probe(args: argparse.Namespace) -> int:
    import torch

    from reverie.evaluation.probe_train import ProbeTrainConfig, format_report, train_probe

    cfg = ProbeTrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        stride=args.stride,
        max_episodes=args.max_episodes,
        heldout_scenes=args.heldout_scenes,
        heldout_seconds=args.heldout_seconds,
        seed=args.seed,
    )
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a directory")
    check_writable(Path(args.out) / "probe.json", "--out")
    torch.set_num_threads(args.threads)
    report = train_probe(args.data, args.out, cfg, progress=not args.no_progress)
    print(format_report(report))
    print(f"wrote {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `reverie eval` with `revisit`, `actions`, `follow`, `speed` and `train-probe`."""
    p = sub.add_parser(
        "eval",
        help="benchmarks: revisit consistency, action accuracy, streaming speed",
        description=__doc__.splitlines()[0],
    )
    eval_sub = p.add_subparsers(dest="eval_command", required=True)
    _add_revisit(eval_sub)
    _add_actions(eval_sub)
    _add_follow(eval_sub)
    _add_speed(eval_sub)
    _add_train_probe(eval_sub)
