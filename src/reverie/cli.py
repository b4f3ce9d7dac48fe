"""The ``reverie`` command line.

reverie render --out data/tiny --episodes 8 --seconds 10 --workers 2
reverie train toy --config configs/toy.yaml trainer.max_steps=20 optim.lr=1e-3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from reverie.data.render_job import TRAJECTORIES, WORLDS, RenderConfig, render_dataset
from reverie.runtime import setup_runtime


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
    p.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
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
    p.set_defaults(func=_encode)


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


class _IntermixedParser(argparse.ArgumentParser):
    """Lets positionals follow options: ``train STAGE --config FILE key=value ...``."""

    _nested = False

    def parse_known_args(self, args=None, namespace=None):
        if self._nested:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
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
    p.add_argument("stage", help="stage name (see reverie.training.stage_names())")
    p.add_argument("--config", required=True, help="YAML config file (values only)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_train)
    p.__class__ = _IntermixedParser  # add_parser builds a plain ArgumentParser


def _train(args: argparse.Namespace) -> int:
    from reverie.training import train

    result = train(args.stage, args.config, args.overrides, resume=args.resume)
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
        **{k: v for k, v in result.metrics.items() if k.endswith("loss")},
    }
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_render(sub)
    _add_train(sub)
    _add_encode(sub)
    # Subcommands that live with their subsystem: each module has `add_parser(sub)`.
    from reverie.evaluation.cli import add_parser as add_eval
    from reverie.explore import add_parser as add_explore
    from reverie.play.cli import add_parser as add_play

    add_explore(sub)
    add_eval(sub)
    add_play(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_runtime(log_level=args.log_level.upper())
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"reverie {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"reverie {args.command}: interrupted; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
