"""`reverie play` web server: one page, a WebSocket per tab, uploads and clip downloads (ASGI).

    app = create_app(lambda: WorldModel.random(seed=0), max_sessions=2)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (protocol in docs/play.md and ``reverie.play.protocol``):

- ``GET /`` the page; ``GET /static/...`` its script and style.
- ``GET /api/config`` model facts and limits; ``GET /api/status`` sessions in use.
- ``GET /api/scene/{seed}`` start view (PNG data URL) and caption of procedural scene ``seed``.
- ``POST /api/upload`` raw image bytes (body, at most 10 MB) -> ``{"upload_id": ...}``.
- ``GET /api/sessions/{id}/clip.mp4`` and ``.../actions.json``: the last seconds of a stream.
- ``WS /ws`` one play session per connection; beyond ``max_sessions`` a ``busy`` message and
  close code 1013 (try again later). Closing the tab frees the slot at once and stops the
  stream; a connection silent for ``PlayOptions.idle_timeout_s`` is closed (code 1001).
- ``/docs`` and ``/openapi.json`` only with ``api_docs=True`` (``reverie play --api-docs``).

Every request passes :class:`reverie.play.access.AccessGuard` first: only this server's own
``Host`` and ``Origin`` (and a token, when one is set) get in.

The routes are FastAPI routers built over one :class:`reverie.play.routes.PlayState` per app:
``pages_router``, ``setup_router`` and ``clip_router`` (``reverie.play.routes``) and
``stream_router`` (the WebSocket, ``reverie.play.ws``). The app holds no globals: everything
lives in the state :func:`create_app` makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from reverie.play.access import AccessGuard, AccessPolicy
from reverie.play.images import MAX_UPLOAD_BYTES, StartImage
from reverie.play.images import render_scene as _render_scene
from reverie.play.routes import STATIC_DIR, PlayState, clip_router, pages_router, setup_router
from reverie.play.session import PlayOptions, SessionRegistry
from reverie.play.ws import stream_router


def _render_pool() -> ProcessPoolExecutor:
    """One worker process for MuJoCo scene renders (see ``images.render_scene``).

    MuJoCo's shared GL context stays bound to the thread that first used it, so rendering on a
    thread of the server would break rendering anywhere else in the process (and the reverse).
    """
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent_pid: int) -> None:
    """In the render worker: exit when the server process is gone (even if it was killed)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="reverie-render-watchdog", daemon=True).start()


def _warm_up() -> None:
    """Import the scene renderer's modules (run in the render worker at start-up)."""
    import reverie.worlds.render
    import reverie.worlds.trajectory  # noqa: F401


def create_app(
    model_factory: Callable[[], object],
    *,
    max_sessions: int = 2,
    default_memory: str | None = None,
    options: PlayOptions | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    render_scene: Callable[[int, int], StartImage] = _render_scene,
    render_executor: Callable[[], Executor] | None = None,
    access: AccessPolicy | None = None,
    api_docs: bool = False,
) -> FastAPI:
    """Build the ASGI app.

    Args:
        model_factory: returns the world model (``reverie.engine.WorldModel`` interface); called
            once, in a thread, when the server starts (``with TestClient(app)`` in tests).
        max_sessions: concurrent play sessions (browser tabs) allowed.
        default_memory: memory policy preselected on the page (default: the model's first).
        options: clip length, JPEG quality, pending-frame bound (default ``PlayOptions()``).
        max_upload_bytes: upload size limit.
        render_scene: ``(seed, resolution) -> StartImage`` for procedural start scenes.
        render_executor: makes the executor ``render_scene`` runs in (default: one worker
            process, started when the server starts).
        access: hosts, origins and token accepted (default: ``AccessPolicy()``, the local
            machine's names only).
        api_docs: serve ``/docs`` and ``/openapi.json``.

    Raises (at start-up): ValueError if ``default_memory`` is not one of the model's policies.
    """
    state = PlayState(
        registry=SessionRegistry(max_sessions),
        options=options or PlayOptions(),
        max_upload_bytes=max_upload_bytes,
        render_scene=render_scene,
        render_executor=render_executor or _render_pool,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = await asyncio.to_thread(model_factory)
        memory = default_memory or model.memory_policies[0]
        if memory not in model.memory_policies:
            raise ValueError(
                f"unknown memory policy {memory!r}; the model offers {model.memory_policies}"
            )
        state.model, state.memory, state.render = model, memory, state.render_executor()
        state.render.submit(_warm_up)  # import the renderer now, not at the first preview
        try:
            yield
        finally:
            for session in list(state.registry.sessions.values()):
                await asyncio.to_thread(session.stop)
            # Wait for the worker: uvicorn re-raises SIGINT/SIGTERM after shutting down, so
            # the process may end without running atexit hooks.
            await asyncio.to_thread(state.render.shutdown, wait=True, cancel_futures=True)

    docs = {} if api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="reverie play", lifespan=lifespan, **docs)
    app.add_middleware(AccessGuard, policy=access or AccessPolicy())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages_router())
    app.include_router(setup_router(state))
    app.include_router(clip_router(state))
    app.include_router(stream_router(state))
    return app


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yields its base URL (tests, benchmarks).

    ``port=0`` picks a free port. The server stops (and its sessions end) on exit.

    Raises:
        RuntimeError: the server did not start within 60 s (e.g. the model failed to load).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the play server did not start (see the log above)")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
