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

The app holds no globals: everything lives in the closure of :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import multiprocessing
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from reverie.camera.keyboard import KEY_MAP
from reverie.play.access import AccessGuard, AccessPolicy
from reverie.play.images import MAX_UPLOAD_BYTES, StartImage, UploadStore, decode_upload
from reverie.play.images import render_scene as _render_scene
from reverie.play.protocol import (
    GAMMA_RANGE,
    MAX_SEED,
    AckMessage,
    GammaMessage,
    KeysMessage,
    ProtocolError,
    StartMessage,
    StopMessage,
    parse_client_message,
)
from reverie.play.session import PlayOptions, PlaySession, SessionRegistry

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
SCENE_CACHE_SIZE = 32
BUSY_CLOSE_CODE = 1013  # RFC 6455 "try again later"
IDLE_CLOSE_CODE = 1001  # RFC 6455 "going away"


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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


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
    options = options or PlayOptions()
    render_executor = render_executor or _render_pool
    registry = SessionRegistry(max_sessions)
    uploads = UploadStore()
    held: dict = {}  # "model", "memory" (default policy), "render" (process pool)
    scene_cache: OrderedDict[tuple[int, int], StartImage] = OrderedDict()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = await asyncio.to_thread(model_factory)
        memory = default_memory or model.memory_policies[0]
        if memory not in model.memory_policies:
            raise ValueError(
                f"unknown memory policy {memory!r}; the model offers {model.memory_policies}"
            )
        held.update(model=model, memory=memory, render=render_executor())
        held["render"].submit(_warm_up)  # import the renderer now, not at the first preview
        try:
            yield
        finally:
            for session in list(registry.sessions.values()):
                await asyncio.to_thread(session.stop)
            # Wait for the worker: uvicorn re-raises SIGINT/SIGTERM after shutting down, so
            # the process may end without running atexit hooks.
            await asyncio.to_thread(held["render"].shutdown, wait=True, cancel_futures=True)

    docs = {} if api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="reverie play", lifespan=lifespan, **docs)
    app.add_middleware(AccessGuard, policy=access or AccessPolicy())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def config() -> dict:
        model = held["model"]
        return {
            "resolution": model.resolution,
            "fps": model.fps,
            "frames_per_step": model.frames_per_step,
            "memory_policies": list(model.memory_policies),
            "default_memory": held["memory"],
            "max_sessions": registry.max_sessions,
            "keys": KEY_MAP,
            "gamma_range": list(GAMMA_RANGE),
            "max_upload_bytes": max_upload_bytes,
            "clip_seconds": options.clip_seconds,
        }

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/config")
    async def get_config() -> dict:
        return config()

    @app.get("/api/status")
    async def get_status() -> dict:
        return {"active": registry.active, "max_sessions": registry.max_sessions}

    async def start_scene(seed: int) -> StartImage:
        """Rendered in the worker process, cached here (event loop only: no lock)."""
        key = (seed, held["model"].resolution)
        if key not in scene_cache:
            loop = asyncio.get_running_loop()
            try:
                start = await loop.run_in_executor(held["render"], render_scene, *key)
            except BrokenProcessPool:
                held["render"] = render_executor()  # the renderer crashed; the next call retries
                raise RuntimeError("the scene renderer crashed; try again") from None
            scene_cache[key] = start
            while len(scene_cache) > SCENE_CACHE_SIZE:
                scene_cache.popitem(last=False)
        return scene_cache[key]

    @app.get("/api/scene/{seed}")
    async def get_scene(seed: int = PathParam(ge=0, le=MAX_SEED)):
        try:
            start = await start_scene(seed)
        except (RuntimeError, ValueError) as e:
            return _error(500, f"cannot render scene {seed}: {e}")
        buf = io.BytesIO()
        Image.fromarray(start.image).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return {"seed": seed, "caption": start.caption, "image": url}

    @app.post("/api/upload")
    async def upload(request: Request):
        too_big = f"image larger than {max_upload_bytes / 2**20:.0f} MB"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_upload_bytes:
            return _error(413, too_big)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_upload_bytes:
                return _error(413, too_big)
        try:
            image = await asyncio.to_thread(decode_upload, bytes(data), held["model"].resolution)
        except ValueError as e:
            return _error(400, str(e))
        upload_id = secrets.token_urlsafe(12)
        uploads.put(upload_id, image)
        return {"upload_id": upload_id, "size": list(image.shape[:2])}

    def session_or_404(session_id: str) -> PlaySession | JSONResponse:
        session = registry.sessions.get(session_id)
        if session is None or session.clip is None:
            return _error(404, "no such session with a stream (was the tab closed?)")
        return session

    @app.get("/api/sessions/{session_id}/clip.mp4")
    async def clip_mp4(session_id: str):
        session = session_or_404(session_id)
        if isinstance(session, JSONResponse):
            return session
        try:
            data = await asyncio.to_thread(session.clip.mp4_bytes)
        except ValueError as e:
            return _error(409, str(e))
        disposition = 'attachment; filename="reverie-clip.mp4"'
        return Response(data, media_type="video/mp4", headers={"Content-Disposition": disposition})

    @app.get("/api/sessions/{session_id}/actions.json")
    async def clip_actions(session_id: str):
        session = session_or_404(session_id)
        if isinstance(session, JSONResponse):
            return session
        try:
            _, actions = await asyncio.to_thread(session.clip.snapshot)
        except ValueError as e:
            return _error(409, str(e))
        disposition = 'attachment; filename="reverie-clip-actions.json"'
        return JSONResponse(actions, headers={"Content-Disposition": disposition})

    async def handle(session: PlaySession, msg) -> None:
        model = held["model"]
        if isinstance(msg, KeysMessage):
            session.controls.set_keys(msg.keys, msg.seq)
        elif isinstance(msg, AckMessage):
            session.ack(msg.frame)
        elif isinstance(msg, GammaMessage):
            session.controls.set_gamma(msg.gamma)
        elif isinstance(msg, StopMessage):
            await asyncio.to_thread(session.stop)
            session.outbox.put_event({"type": "stopped"})
        elif isinstance(msg, StartMessage):
            memory = msg.memory or held["memory"]
            if memory not in model.memory_policies:
                raise ProtocolError(
                    f"unknown memory policy {memory!r}; choose one of {list(model.memory_policies)}"
                )
            if msg.scene_seed is not None:
                try:
                    start = await start_scene(msg.scene_seed)
                except (RuntimeError, ValueError) as e:
                    raise ProtocolError(f"cannot render scene {msg.scene_seed}: {e}") from None
                image, caption, source = start.image, start.caption, start.source
            else:
                try:
                    image = uploads.get(msg.upload_id)
                except KeyError:
                    raise ProtocolError("unknown upload_id: upload the image again") from None
                caption, source = "", {"kind": "upload"}
            prompt = caption if msg.prompt is None else msg.prompt
            await asyncio.to_thread(session.stop)
            info = {"prompt": prompt, "memory": memory, "gamma_start": msg.gamma, "seed": msg.seed}
            session.start(
                image,
                prompt=prompt,
                memory=memory,
                gamma=msg.gamma,
                seed=msg.seed,
                info={**info, "source": source},
            )

    async def send_loop(ws: WebSocket, session: PlaySession) -> None:
        try:
            while True:
                item = await session.outbox.get(session.may_send_frame)
                if isinstance(item, dict):
                    await ws.send_text(json.dumps(item))
                else:
                    await ws.send_bytes(session.frame_message(item))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # usually the client went away (the receive loop sees it)
            log.info("send loop ended: %r", e)
            with contextlib.suppress(Exception):
                await ws.close(code=1011)

    async def receive_loop(ws: WebSocket, session: PlaySession) -> None:
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), options.idle_timeout_s)
            except TimeoutError:
                idle = f"closed after {options.idle_timeout_s:g} s without a message"
                with contextlib.suppress(Exception):
                    await ws.send_text(json.dumps({"type": "error", "message": idle}))
                    await ws.close(code=IDLE_CLOSE_CODE)
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if text is None:
                    raise ProtocolError("binary messages are not part of the protocol; send JSON")
                await handle(session, parse_client_message(text, KEY_MAP))
            except ProtocolError as e:
                session.outbox.put_event({"type": "error", "message": str(e)})
            except Exception as e:  # a bug must not take the connection (or server) down
                log.exception("error handling a client message")
                session.outbox.put_event({"type": "error", "message": f"server error: {e}"})

    @app.websocket("/ws")
    async def play(ws: WebSocket) -> None:
        await ws.accept()
        session_id = registry.try_reserve()
        if session_id is None:
            n = registry.max_sessions
            busy = {
                "type": "busy",
                "message": f"Busy: all {n} play session(s) are in use. Close another tab or "
                "try again in a moment.",
                "max_sessions": n,
            }
            await ws.send_text(json.dumps(busy))
            await ws.close(code=BUSY_CLOSE_CODE)
            return
        session = PlaySession(session_id, held["model"], options)
        registry.add(session)
        session.outbox.put_event({"type": "hello", "session": session_id})
        sender = asyncio.create_task(send_loop(ws, session))
        try:
            await receive_loop(ws, session)
        finally:
            sender.cancel()
            # The slot is free as soon as the socket is closed; the stream thread ends after
            # its current step (the shield keeps the join running if this task is cancelled).
            registry.release(session_id)
            await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(session.stop)))

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
