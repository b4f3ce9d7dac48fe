"""The play server's WebSocket, ``WS /ws``: one play session per connection.

Beyond ``max_sessions`` a connection gets a ``busy`` message and close code 1013 (try again
later). Closing the tab frees the slot at once and stops the stream; a connection silent for
``PlayOptions.idle_timeout_s`` is closed (code 1001). Per connection two loops run: the receive
loop parses client messages (``reverie.play.protocol``) and acts on the session, the send loop
forwards the session's outbox (JSON events and binary frames) to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket

from reverie.camera.keyboard import KEY_MAP
from reverie.play.protocol import (
    AckMessage,
    GammaMessage,
    KeysMessage,
    ProtocolError,
    StartMessage,
    StopMessage,
    parse_client_message,
)
from reverie.play.routes import PlayState
from reverie.play.session import PlaySession

log = logging.getLogger(__name__)
BUSY_CLOSE_CODE = 1013  # RFC 6455 "try again later"
IDLE_CLOSE_CODE = 1001  # RFC 6455 "going away"


def stream_router(state: PlayState) -> APIRouter:
    """``WS /ws``: reserve a session slot, then run the receive and send loops until the client
    goes away."""
    router = APIRouter()

    async def handle(session: PlaySession, msg) -> None:
        model = state.model
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
            memory = msg.memory or state.memory
            if memory not in model.memory_policies:
                raise ProtocolError(
                    f"unknown memory policy {memory!r}; choose one of {list(model.memory_policies)}"
                )
            if msg.scene_seed is not None:
                try:
                    start = await state.start_scene(msg.scene_seed)
                except (RuntimeError, ValueError) as e:
                    raise ProtocolError(f"cannot render scene {msg.scene_seed}: {e}") from None
                image, caption, source = start.image, start.caption, start.source
            else:
                try:
                    image = state.uploads.get(msg.upload_id)
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
        timeout = state.options.idle_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                idle = f"closed after {timeout:g} s without a message"
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

    @router.websocket("/ws")
    async def play(ws: WebSocket) -> None:
        await ws.accept()
        registry = state.registry
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
        session = PlaySession(session_id, state.model, state.options)
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

    return router
