"""`reverie play`: interactive play in the browser.

    reverie play --random                       # untrained tiny model, no weights needed
    reverie play --checkpoint runs/model --memory relic --host 127.0.0.1 --port 8000

Then open http://127.0.0.1:8000/ (docs/play.md).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `reverie play` on the subcommand parsers of `reverie.cli`."""
    p = sub.add_parser(
        "play",
        help="interactive play in the browser (web server)",
        description="Serve a page that streams the world model: pick a procedural scene or "
        "upload an image, then steer the camera with the keyboard. One session per browser "
        "tab, at most --max-sessions at a time.",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="world model directory (WorldModel.save_pretrained; default: the shipped model)",
    )
    model.add_argument(
        "--random", action="store_true", help="an untrained tiny model (no weights needed)"
    )
    p.add_argument("--memory", default="relic", help="memory policy preselected (default relic)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--max-sessions", type=int, default=2, help="concurrent sessions/tabs (default 2)"
    )
    p.add_argument(
        "--clip-seconds", type=float, default=10.0, help="length of 'Save clip' (default 10)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: each session's stream thread computes on its "
        "own core; a second thread per step was 6x slower on a busy 2-core CPU)",
    )
    p.set_defaults(func=_play)


def load_model(checkpoint: str | None, *, random: bool, device: str):
    """The world model to serve.

    Raises:
        FileNotFoundError: no model at ``checkpoint`` (or no shipped default); the message says
            to pass ``--checkpoint PATH`` or ``--random``.
    """
    from reverie.engine import WorldModel

    if random:
        return WorldModel.random(seed=0)
    try:
        return WorldModel.from_pretrained(checkpoint, device=device)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}; or pass --random to try the page with an untrained model"
        ) from e


def _play(args: argparse.Namespace) -> int:
    import uvicorn

    from reverie.play.server import create_app
    from reverie.play.session import PlayOptions
    from reverie.runtime import setup_runtime

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    setup_runtime(threads=args.threads)
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if not args.clip_seconds > 0:
        raise ValueError(f"--clip-seconds must be > 0, got {args.clip_seconds}")
    model = load_model(args.checkpoint, random=args.random, device=args.device)
    if args.memory not in model.memory_policies:
        raise ValueError(
            f"unknown --memory {args.memory!r}; choose one of {', '.join(model.memory_policies)}"
        )
    app = create_app(
        lambda: model,
        max_sessions=args.max_sessions,
        default_memory=args.memory,
        options=PlayOptions(clip_seconds=args.clip_seconds),
    )
    print(f"reverie play: open http://{args.host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
