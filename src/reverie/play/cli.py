"""`reverie play`: interactive play in the browser.

    reverie play --random                       # untrained tiny model, no weights needed
    reverie play --checkpoint runs/model --memory relic --host 127.0.0.1 --port 8000
    reverie play --host 0.0.0.0 --token         # other machines: open the printed URL

Then open http://127.0.0.1:8000/ (docs/play.md). Only this machine's browser gets in by
default (``Host`` and ``Origin`` are checked, see ``reverie.play.access``).
"""

from __future__ import annotations

import argparse
import secrets
import sys


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
    from reverie.memory import policy_names

    p.add_argument(
        "--memory",
        default="relic",
        help=f"memory policy preselected: {', '.join(policy_names())} (default relic)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument(
        "--token",
        nargs="?",
        const="auto",
        default=None,
        help="require this secret on every request (--token alone: a random one); open the "
        "printed URL with ?token=... once. Meant for --host 0.0.0.0",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept this Host name (e.g. the machine's LAN name); repeatable",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="also accept WebSockets and requests from this page origin "
        "(http://host:port); repeatable",
    )
    p.add_argument("--api-docs", action="store_true", help="serve /docs and /openapi.json")
    p.add_argument(
        "--max-sessions", type=int, default=2, help="concurrent sessions/tabs (default 2)"
    )
    p.add_argument(
        "--clip-seconds", type=float, default=10.0, help="length of 'Save clip' (default 10)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
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

    from reverie.engine.world_model import check_device
    from reverie.play.access import WILDCARD_HOSTS, AccessPolicy
    from reverie.play.server import create_app
    from reverie.play.session import PlayOptions
    from reverie.runtime import setup_runtime

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    options = PlayOptions(clip_seconds=args.clip_seconds)  # checks --clip-seconds
    if args.random and args.device != "cpu":
        raise ValueError("--random builds a CPU model; drop --device")
    check_device(args.device)
    token = secrets.token_urlsafe(16) if args.token == "auto" else args.token
    access = AccessPolicy.for_server(
        args.host,
        allow_hosts=tuple(args.allow_host),
        allow_origins=tuple(args.allow_origin),
        token=token,
    )
    setup_runtime(threads=args.threads)
    model = load_model(args.checkpoint, random=args.random, device=args.device)
    if args.memory not in model.memory_policies:
        raise ValueError(
            f"unknown --memory {args.memory!r}; choose one of {', '.join(model.memory_policies)}"
        )
    app = create_app(
        lambda: model,
        max_sessions=args.max_sessions,
        default_memory=args.memory,
        options=options,
        access=access,
        api_docs=args.api_docs,
    )
    shown = "127.0.0.1" if args.host in WILDCARD_HOSTS else args.host
    query = "" if token is None else f"?token={token}"
    if args.host in WILDCARD_HOSTS and token is None:
        print(
            "reverie play: listening on all interfaces without --token: only the names "
            f"{sorted(access.hosts)} are accepted as Host (add --allow-host NAME or --token)",
            file=sys.stderr,
        )
    print(f"reverie play: open http://{shown}:{args.port}/{query} (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
