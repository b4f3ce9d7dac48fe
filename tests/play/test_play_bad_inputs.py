"""The play server's part of the bad-input corpus (GitHub issue 13): bad WebSocket messages
are protocol errors on the same connection, foreign origins and hosts are refused, a token
guards a server on all interfaces, and a good session works afterwards."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from play_testing import FakeModel, LocalClient, fake_render_scene
from starlette.websockets import WebSocketDisconnect
from test_play_server import frames, next_event, start

from reverie.play.access import AccessPolicy
from reverie.play.server import create_app


def test_play_protocol_and_access_corpus():
    """Bad WebSocket messages get protocol errors on the same connection; foreign origins and
    hosts are refused; the docs are off; a good session works afterwards."""
    app = create_app(
        FakeModel,
        render_scene=fake_render_scene,
        render_executor=lambda: ThreadPoolExecutor(1),
    )
    bad_messages = {
        "[" * 3000 + "]" * 3000: "too long",
        "[" * 2000: "nested too deeply",
        '{"type": "keys", "keys": [[[[["KeyW"]]]]], "seq": 1}': "nested too deeply",
        json.dumps({"type": "start", "scene_seed": 1, "prompt": "\ud800"}): "UTF-8",
        json.dumps({"type": "gamma", "gamma": 1e308 * 10}): "not valid JSON",
        '{"type": "gamma", "gamma": Infinity}': "gamma must be in",
        '{"type": "gamma", "gamma": 100}': "gamma must be in",
        '{"type": "start", "scene_seed": -1}': "scene_seed",
        json.dumps({"type": "start", "scene_seed": 1, "prompt": "x" * 4001}): "characters",
        '{"type": "ack", "frame": true}': "must be int",
        "": "not valid JSON",
    }
    with LocalClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            next_event(ws, "hello")
            for text, words in bad_messages.items():
                ws.send_text(text)
                message = next_event(ws, "error")["message"]
                assert words in message and "server error" not in message, (text[:40], message)
            start(ws, prompt="a good prompt")
            frames(ws, 2)
        evil = {"origin": "http://evil.example"}
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/ws", headers=evil):
                pass
        assert client.get("/api/config", headers=evil).status_code == 403
        rebound = {"host": "rebound.example:8000"}  # DNS rebinding: the attacker's name
        assert client.get("/api/config", headers=rebound).status_code == 403
        own = {"origin": "http://127.0.0.1:8000"}
        assert client.get("/api/config", headers=own).status_code == 200
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert client.get(path).status_code == 404
        with TestClient(app) as other:  # Host: testserver, a name this server does not have
            assert other.get("/").status_code == 403
        with client.websocket_connect("/ws") as ws:  # still serving, and the slot came back
            next_event(ws, "hello")
            start(ws)
            frames(ws, 1)


def test_play_token_for_all_interfaces():
    access = AccessPolicy.for_server("0.0.0.0", token="s3cret-token")
    app = create_app(FakeModel, render_scene=fake_render_scene,
                     render_executor=lambda: ThreadPoolExecutor(1), access=access)  # fmt: skip
    with LocalClient(app, base_url="http://192.168.1.5:8000") as client:  # a LAN address
        assert client.get("/api/config").status_code == 403
        assert client.get("/?token=wrong").status_code == 403
        page = client.get("/?token=s3cret-token")
        assert page.status_code == 200 and "reverie_token" in page.headers["set-cookie"]
        assert client.get("/api/config").status_code == 200  # the cookie carries the token
        with client.websocket_connect("/ws") as ws:
            next_event(ws, "hello")
