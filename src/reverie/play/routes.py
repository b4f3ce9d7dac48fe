"""The play server's HTTP routes, as FastAPI routers over one :class:`PlayState`.

- :func:`pages_router`: ``GET /``, the page (its script and style are mounted at ``/static``
  by :func:`reverie.play.server.create_app`).
- :func:`setup_router`: what the page needs before it starts a session: ``GET /api/config``,
  ``GET /api/status``, ``GET /api/scene/{seed}`` and ``POST /api/upload``.
- :func:`clip_router`: ``GET /api/sessions/{id}/clip.mp4`` and ``.../actions.json``.

The WebSocket that streams a session is :func:`reverie.play.ws.stream_router`. Each router
is built per app, over that app's state: there are no globals. An error is a JSON body
``{"detail": message}`` with its status (FastAPI's ``HTTPException``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image

from reverie.camera.keyboard import KEY_MAP
from reverie.play.clip import ClipBuffer
from reverie.play.images import StartImage, UploadStore, decode_upload
from reverie.play.protocol import GAMMA_RANGE, MAX_SEED
from reverie.play.session import PlayOptions, SessionRegistry

STATIC_DIR = Path(__file__).parent / "static"
SCENE_CACHE_SIZE = 32


@dataclass(eq=False)
class PlayState:
    """What the routes of one app share; :func:`reverie.play.server.create_app` makes it.

    Attributes:
        registry: the play sessions (one per WebSocket) and the limit on them.
        options: clip length, JPEG quality, pending-frame bound, idle timeout.
        max_upload_bytes: upload size limit.
        render_scene: ``(seed, resolution) -> StartImage`` for procedural start scenes.
        render_executor: makes the executor ``render_scene`` runs in.
        uploads: uploaded start images by id.
        scene_cache: rendered start scenes by ``(seed, resolution)``, least recently rendered
            dropped beyond ``SCENE_CACHE_SIZE`` (event loop only: no lock).
        model: the world model; memory: the preselected memory policy; render: the executor.
            All three are set when the server starts (the app's lifespan).
    """

    registry: SessionRegistry
    options: PlayOptions
    max_upload_bytes: int
    render_scene: Callable[[int, int], StartImage]
    render_executor: Callable[[], Executor]
    uploads: UploadStore = field(default_factory=UploadStore)
    scene_cache: OrderedDict[tuple[int, int], StartImage] = field(default_factory=OrderedDict)
    model: Any = None
    memory: str | None = None
    render: Executor | None = None

    async def start_scene(self, seed: int) -> StartImage:
        """The start image of scene ``seed``: rendered in the worker process, cached here.

        Raises:
            RuntimeError: the renderer crashed (a new one is made for the next call) or has
                no GL; ValueError: a seed the scene sampler refuses.
        """
        key = (seed, self.model.resolution)
        if key not in self.scene_cache:
            loop = asyncio.get_running_loop()
            try:
                start = await loop.run_in_executor(self.render, self.render_scene, *key)
            except BrokenProcessPool:
                self.render = self.render_executor()  # the renderer crashed; the next call retries
                raise RuntimeError("the scene renderer crashed; try again") from None
            self.scene_cache[key] = start
            while len(self.scene_cache) > SCENE_CACHE_SIZE:
                self.scene_cache.popitem(last=False)
        return self.scene_cache[key]

    def config(self) -> dict:
        """Model facts and limits the page is built from (``GET /api/config``)."""
        model = self.model
        return {
            "resolution": model.resolution,
            "fps": model.fps,
            "frames_per_step": model.frames_per_step,
            "memory_policies": list(model.memory_policies),
            "default_memory": self.memory,
            "max_sessions": self.registry.max_sessions,
            "keys": KEY_MAP,
            "gamma_range": list(GAMMA_RANGE),
            "max_upload_bytes": self.max_upload_bytes,
            "clip_seconds": self.options.clip_seconds,
        }


def pages_router() -> APIRouter:
    """``GET /``: the page."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return router


def setup_router(state: PlayState) -> APIRouter:
    """Config, status, scene previews and uploads: what the page asks before a session."""
    router = APIRouter()

    @router.get("/api/config")
    async def get_config() -> dict:
        return state.config()

    @router.get("/api/status")
    async def get_status() -> dict:
        return {"active": state.registry.active, "max_sessions": state.registry.max_sessions}

    @router.get("/api/scene/{seed}")
    async def get_scene(seed: int = PathParam(ge=0, le=MAX_SEED)):
        try:
            start = await state.start_scene(seed)
        except (RuntimeError, ValueError) as e:
            raise HTTPException(500, f"cannot render scene {seed}: {e}") from None
        buf = io.BytesIO()
        Image.fromarray(start.image).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return {"seed": seed, "caption": start.caption, "image": url}

    @router.post("/api/upload")
    async def upload(request: Request):
        too_big = f"image larger than {state.max_upload_bytes / 2**20:.0f} MB"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > state.max_upload_bytes:
            raise HTTPException(413, too_big)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > state.max_upload_bytes:
                raise HTTPException(413, too_big)
        try:
            image = await asyncio.to_thread(decode_upload, bytes(data), state.model.resolution)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        upload_id = secrets.token_urlsafe(12)
        state.uploads.put(upload_id, image)
        return {"upload_id": upload_id, "size": list(image.shape[:2])}

    return router


def clip_router(state: PlayState) -> APIRouter:
    """Downloads of the last seconds of a session's stream: the video and its actions."""
    router = APIRouter()

    async def read_clip(session_id: str, read: Callable[[ClipBuffer], Any]) -> Any:
        """``read(clip)`` of the session's clip, in a thread.

        Raises:
            HTTPException: 404 without such a session or one that never streamed, 409 for a
                clip that cannot be read (the clip's ValueError, e.g. still empty).
        """
        session = state.registry.sessions.get(session_id)
        if session is None or session.clip is None:
            raise HTTPException(404, "no such session with a stream (was the tab closed?)")
        try:
            return await asyncio.to_thread(read, session.clip)
        except ValueError as e:
            raise HTTPException(409, str(e)) from None

    @router.get("/api/sessions/{session_id}/clip.mp4")
    async def clip_mp4(session_id: str):
        data = await read_clip(session_id, ClipBuffer.mp4_bytes)
        disposition = 'attachment; filename="reverie-clip.mp4"'
        return Response(data, media_type="video/mp4", headers={"Content-Disposition": disposition})

    @router.get("/api/sessions/{session_id}/actions.json")
    async def clip_actions(session_id: str):
        _, actions = await read_clip(session_id, ClipBuffer.snapshot)
        disposition = 'attachment; filename="reverie-clip-actions.json"'
        return JSONResponse(actions, headers={"Content-Disposition": disposition})

    return router
