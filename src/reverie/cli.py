"""The ``reverie`` command line.

reverie render --out data/tiny --episodes 8 --seconds 10 --workers 2
reverie train toy --config configs/toy.yaml trainer.max_steps=20 optim.lr=1e-3

Every subcommand runs inside one error boundary (:func:`main`): a failure is one line on
stderr, ``reverie CMD: error: ...`` naming the file or option, and exit code 2 (1 for an
internal error); the traceback only with ``--debug`` (anywhere on the command line) or
``REVERIE_DEBUG=1``. SIGTERM is handled like Ctrl-C, so temporary files are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from reverie.data.render_job import TRAJECTORIES, WORLDS, RenderConfig, render_dataset
from reverie.runtime import setup_runtime

# What Ctrl-C / SIGTERM leaves, by subcommand (``on_interrupt`` default of its parser).
RESUMES = "re-run the same command to resume"
NO_RESUME = "it stopped before finishing and does not resume"


def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render a dataset of procedural-world episodes",
        description="Render episodes (video, poses, actions, caption) into "
        "OUT/episodes/<id>/ and list them in OUT/manifest.jsonl. "
        "Re-running the same command resumes.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--episodes", type=int, default=8, help="number of episodes (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="episode length (default 10)")
    p.add_argument("--resolution", type=int, default=64, help="square frame side in pixels")
    p.add_argument("--fps", type=int, default=16, help="frames per second (default 16)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument(
        "--world",
        choices=WORLDS,
        default="procedural",
        help="procedural = indoor rooms and open scenes; rooms; open; memory-maze",
    )
    p.add_argument(
        "--trajectory",
        choices=TRAJECTORIES,
        default="mixed",
        help="camera path family (default mixed)",
    )
    p.add_argument("--depth", action="store_true", help="also store depth maps")
    p.set_defaults(func=_render, on_interrupt=RESUMES)


def _render(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    cfg = RenderConfig(
        episodes=args.episodes,
        seconds=args.seconds,
        resolution=args.resolution,
        fps=args.fps,
        seed=args.seed,
        world=args.world,
        trajectory=args.trajectory,
        depth=args.depth,
    )
    t0 = time.perf_counter()
    rows = render_dataset(cfg, args.out, workers=args.workers)
    frames = sum(r["frames"] for r in rows)
    summary = {
        "out": args.out,
        "episodes": len(rows),
        "frames": frames,
        "seconds_elapsed": round(time.perf_counter() - t0, 2),
        "mean_revisit_fraction": round(
            sum(r.get("revisit_fraction") or 0.0 for r in rows) / max(len(rows), 1), 3
        ),
    }
    print(json.dumps(summary))
    return 0


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="cache VAE latents of a rendered dataset",
        description="Encode every window of --clip-frames frames of each episode of DATA with "
        "a trained VAE into safetensors shards under OUT (see reverie.training.encode). "
        "Re-running the same command resumes.",
    )
    p.add_argument("--data", required=True, help="dataset directory (reverie render)")
    p.add_argument("--vae", required=True, help="vae run dir, checkpoint or save_vae dir")
    p.add_argument("--out", required=True, help="output directory of the latent shards")
    p.add_argument(
        "--clip-frames",
        type=int,
        default=None,
        help="frames per window, 1+4k (default: the longest that fits every episode)",
    )
    p.add_argument("--episodes-per-shard", type=int, default=8, help="default 8")
    p.add_argument("--batch-size", type=int, default=4, help="windows per VAE call (default 4)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16: encoder under bf16 autocast (faster on CPU)",
    )
    p.set_defaults(func=_encode, on_interrupt=RESUMES)


def _encode(args: argparse.Namespace) -> int:
    from reverie.training.encode import encode_dataset, summary

    index = encode_dataset(
        args.data,
        args.vae,
        args.out,
        clip_frames=args.clip_frames,
        episodes_per_shard=args.episodes_per_shard,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )
    print(summary(index, args.out))
    return 0


def _add_fit_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-tokenizer",
        help="fit the linear patch tokenizer (whitened PCA) on a rendered dataset",
        description="Fit a PatchTokenizer (reverie.tokenizer.patch) on the first --episodes "
        "episodes of DATA and write a tokenizer directory to OUT for `reverie encode --vae`.",
    )
    p.add_argument("--data", required=True, help="dataset directory (reverie render)")
    p.add_argument("--out", required=True, help="output tokenizer directory")
    p.add_argument("--channels", type=int, default=16, help="latent channels (default 16)")
    p.add_argument("--patch", type=int, default=4, help="pixels per latent pixel (default 4)")
    p.add_argument("--episodes", type=int, default=64, help="episodes to fit on (default 64)")
    p.set_defaults(func=_fit_tokenizer)


def _fit_tokenizer(args: argparse.Namespace) -> int:
    from reverie.training.tokenizer_fit import fit_tokenizer

    report = fit_tokenizer(
        args.data, args.out, channels=args.channels, patch=args.patch, episodes=args.episodes
    )
    keys = ("episodes", "frames", "first_explained", "group_explained", "seconds")
    print(json.dumps({"out": args.out, **{k: report[k] for k in keys}}))
    return 0


def stage_summaries() -> dict[str, str]:
    """``{stage name: one line}`` from each registered stage's module docstring."""
    from reverie.training import get_stage, stage_names

    out = {}
    for name in stage_names():
        doc = sys.modules[get_stage(name).__module__].__doc__ or ""
        text = " ".join(doc.strip().split("\n\n")[0].split())
        text = re.sub(r"^``\w+``:\s*", "", text).replace("``", "").replace("**", "")
        out[name] = re.split(r" \(| — |\. |; ", text)[0].rstrip(".")
    return out


class _IntermixedParser(argparse.ArgumentParser):
    """Lets positionals follow options: ``train STAGE --config FILE key=value ...``."""

    _nested = False

    def format_help(self) -> str:
        """The help, with every training stage and one line each (imported only for --help)."""
        stages = "\n".join(f"  {n:<10} {line}" for n, line in stage_summaries().items())
        return super().format_help() + f"\nstages:\n{stages}\n"

    def parse_known_args(self, args=None, namespace=None):
        if self._nested:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        # `--resume=must` is its own flag, so that a bare `--resume` never eats an override
        aliases = {"--resume=must": "--resume-must", "--resume=auto": "--resume"}
        if args is not None:
            args = [aliases.get(a, a) for a in args]
        self._nested = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._nested = False


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a stage (toy, ...) from a YAML config",
        description="Train STAGE with the YAML config FILE and key=value overrides "
        "(dotted keys, YAML values: optim.lr=1e-4 trainer.max_steps=10). Checkpoints, "
        "metrics.jsonl and config.json go to trainer.run_dir; --resume continues from its "
        "newest checkpoint. Multi-process: torchrun --standalone --nproc_per_node N -m "
        "reverie.cli train ... trainer.distributed=ddp",
    )
    p.add_argument("stage", help="stage name (listed under 'stages' below)")
    p.add_argument("--config", required=True, help="YAML config file (values only)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint (an older one if the newest is "
        "damaged, said on stderr); with nothing to resume, start fresh (--resume) or fail "
        "(--resume=must)",
    )
    p.add_argument("--resume-must", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_train, on_interrupt=RESUMES)
    p.__class__ = _IntermixedParser  # add_parser builds a plain ArgumentParser


def _train(args: argparse.Namespace) -> int:
    from reverie.training import Trainer, load_experiment
    from reverie.training.checkpoint import checkpoint_dirs

    resume = args.resume or args.resume_must
    stage_cls, config = load_experiment(args.stage, args.config, args.overrides, resume=resume)
    run_dir = config.trainer.run_dir
    if args.resume_must and not checkpoint_dirs(run_dir):
        raise ValueError(f"--resume=must: {run_dir} has no checkpoint to resume from")
    result = Trainer(stage_cls, config).run()
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
        **{k: v for k, v in result.metrics.items() if k.endswith("loss")},
    }
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


DEBUG_ENV = "REVERIE_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (or set {DEBUG_ENV}=1)"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _add_debug_flag(parser: argparse.ArgumentParser, seen: set[int]) -> None:
    """``--debug`` on every subcommand too (default SUPPRESS, so the top level's survives)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    sub.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
                    )
                    _add_debug_flag(sub, seen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description=__doc__.splitlines()[0])
    parser.set_defaults(on_interrupt=NO_RESUME, eval_command=None)
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="logging level (default WARNING)",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_render(sub)
    _add_train(sub)
    _add_encode(sub)
    _add_fit_tokenizer(sub)
    # Subcommands that live with their subsystem: each module has `add_parser(sub)`.
    from reverie.evaluation.cli import add_parser as add_eval
    from reverie.explore import add_parser as add_explore
    from reverie.play.cli import add_parser as add_play

    add_explore(sub)
    add_eval(sub)
    add_play(sub)
    _add_debug_flag(parser, set())
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks remove temporary files."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Errors of bad input or a damaged file, by (module, class); checked only if already imported.
_USER_ERROR_CLASSES = (
    ("safetensors", "SafetensorError"),
    ("reverie.models.state_dicts", "CheckpointKeyError"),
    ("PIL.Image", "DecompressionBombError"),
    ("mujoco", "FatalError"),
    ("yaml", "YAMLError"),
)


def is_user_error(e: BaseException) -> bool:
    """Bad input, a damaged or unwritable file, too little memory: exit code 2, no traceback."""
    if isinstance(e, (ValueError, OSError, RuntimeError, MemoryError)):
        return True
    for module, cls in _USER_ERROR_CLASSES:
        found = getattr(sys.modules.get(module), cls, None)
        if isinstance(found, type) and isinstance(e, found):
            return True
    return False


def describe_error(e: BaseException) -> str:
    """One line for the user: the message (which names the file or option), flattened."""
    if isinstance(e, MemoryError):
        return "out of memory; use a shorter --seconds, fewer frames or a smaller resolution"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        names = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"{names}: {e.strerror}"
    text = " ".join(str(e).split())
    if type(e).__name__ == "SafetensorError":
        return f"damaged safetensors file: {text}"
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one ``reverie`` command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    name = " ".join(filter(None, (args.command, args.eval_command)))
    try:
        with _sigterm_raises():
            setup_runtime(log_level=args.log_level)
            return args.func(args)
    except (KeyboardInterrupt, Terminated) as e:
        what = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        print(f"reverie {name}: {what}; {args.on_interrupt}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    except Exception as e:
        if debug:
            raise
        if is_user_error(e):
            print(f"reverie {name}: error: {describe_error(e)}", file=sys.stderr)
            return 2
        print(
            f"reverie {name}: internal error: {type(e).__name__}: {describe_error(e)} "
            f"(re-run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
