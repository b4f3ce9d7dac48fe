"""The play server through Starlette's TestClient, with a fake world model (fast)."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from play_testing import FakeModel, LocalClient, fake_render_scene

from reverie.data.video import read_mp4
from reverie.play.protocol import unpack_frame
from reverie.play.server import create_app
from reverie.play.session import PlayOptions


def make_client(model=None, **kwargs) -> TestClient:
    app = create_app(
        lambda: model or FakeModel(),
        render_scene=fake_render_scene,
        render_executor=lambda: ThreadPoolExecutor(1),
        **kwargs,
    )
    return LocalClient(app)


def receive(ws, timeout: float = 5.0):
    """Next server message: a dict event, or ``(header, jpeg)`` for a frame; fails on timeout."""

    async def get():
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()  # TestClient has no receive timeout of its own

    message = ws.portal.call(get)
    if message["type"] == "websocket.close":
        return {"type": "<closed>", "code": message["code"]}
    if message.get("text") is not None:
        return json.loads(message["text"])
    return unpack_frame(message["bytes"])


def next_event(ws, kind: str) -> dict:
    """Skip frames up to the next event; it must be of type ``kind``."""
    while isinstance(message := receive(ws), tuple):
        pass
    assert message["type"] == kind, message
    return message


def frames(ws, n: int) -> list[tuple[dict, bytes]]:
    out = []
    while len(out) < n:
        message = receive(ws)
        assert isinstance(message, tuple), message
        out.append(message)
    return out


def wait_until(predicate, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        time.sleep(0.02)


def start(ws, **fields) -> dict:
    ws.send_text(json.dumps({"type": "start", "scene_seed": 3, **fields}))
    return next_event(ws, "ready")


def test_config_and_page():
    with make_client(max_sessions=3, default_memory="full") as client:
        config = client.get("/api/config").json()
        assert config["resolution"] == 32 and config["fps"] == 16
        assert config["memory_policies"] == ["relic", "full", "window"]
        assert config["default_memory"] == "full" and config["max_sessions"] == 3
        assert config["keys"]["KeyW"] == "dolly_in"
        page = client.get("/")
        assert page.status_code == 200 and 'id="screen"' in page.text
        assert client.get("/static/play.js").status_code == 200
        scene = client.get("/api/scene/5").json()
        assert scene["caption"] == "fake scene 5" and scene["image"].startswith("data:image/png")
        assert client.get("/api/scene/-1").status_code == 422


def test_stream_responds_to_held_keys():
    with make_client() as client, client.websocket_connect("/ws") as ws:
        assert next_event(ws, "hello")["session"]
        ready = start(ws, memory="window", prompt="a test")
        assert ready == {"type": "ready", "memory": "window", "prompt": "a test"}
        still = frames(ws, 6)
        header, jpeg = still[0]
        assert header["frame"] == 0 and header["seq"] == -1 and header["key_age_ms"] is None
        assert np.asarray(Image.open(io.BytesIO(jpeg))).shape == (32, 32, 3)
        assert {"fps", "dropped", "cache_tokens", "cache_bytes", "step_ms"} <= set(header)
        assert len({j for _, j in still}) == 1  # static: every frame is the start frame
        ws.send_text(json.dumps({"type": "keys", "keys": ["KeyD", "ArrowUp"], "seq": 1}))
        moving = []
        while len(moving) < 6:
            header, jpeg = frames(ws, 1)[0]
            if header["seq"] == 1:
                moving.append((header, jpeg))
        assert moving[0][0]["action"] == {"truck_right": 1.0, "tilt_up": 2.0}
        assert moving[0][0]["key_age_ms"] >= 0
        assert len({j for _, j in moving}) == 6  # every frame moved
        assert all(h["frame"] == moving[0][0]["frame"] + i for i, (h, _) in enumerate(moving))


def test_bad_messages_get_errors_and_the_connection_stays_up():
    with make_client() as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        for bad in ['{"type": "keys", "keys": ["KeyZ"], "seq": 1}', "{{{", '{"type": 1}']:
            ws.send_text(bad)
            assert next_event(ws, "error")["message"]
        ws.send_bytes(b"\x00\x01")
        assert "binary" in next_event(ws, "error")["message"]
        ws.send_text(json.dumps({"type": "start", "upload_id": "nope"}))
        assert "upload" in next_event(ws, "error")["message"]
        ws.send_text(json.dumps({"type": "start", "scene_seed": 1, "memory": "nonsense"}))
        assert "unknown memory policy" in next_event(ws, "error")["message"]
        start(ws)  # still works
        frames(ws, 2)
        ws.send_text(json.dumps({"type": "stop"}))
        next_event(ws, "stopped")


def test_engine_failure_is_reported():
    with make_client(FakeModel(fail_start=True)) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        ws.send_text(json.dumps({"type": "start", "scene_seed": 1}))
        error = next_event(ws, "error")
        assert error["stopped"] and "fake start failure" in error["message"]
        assert client.get("/api/status").json()["active"] == 1


def test_session_limit_and_disconnect_frees_the_slot():
    model = FakeModel()
    with make_client(model, max_sessions=1) as client:
        with client.websocket_connect("/ws") as first:
            next_event(first, "hello")
            start(first)
            frames(first, 2)
            with client.websocket_connect("/ws") as second:
                busy = receive(second)
                assert busy["type"] == "busy" and "Busy" in busy["message"]
                assert receive(second) == {"type": "<closed>", "code": 1013}
            assert client.get("/api/status").json() == {"active": 1, "max_sessions": 1}
        assert client.get("/api/status").json()["active"] == 0  # free as the socket closed
        wait_until(lambda: model.closed == 1)  # the engine session was closed with the tab
        with client.websocket_connect("/ws") as third:
            assert next_event(third, "hello")


def png(size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_and_limits():
    with make_client(max_upload_bytes=2000) as client:
        ok = client.post("/api/upload", content=png())
        assert ok.status_code == 200 and ok.json()["size"] == [32, 32]
        corrupt = client.post("/api/upload", content=b"GIF89a not really")
        assert corrupt.status_code == 400 and "not a readable image" in corrupt.json()["detail"]
        big = client.post("/api/upload", content=b"\0" * 5000)
        assert big.status_code == 413 and "larger than" in big.json()["detail"]
        assert client.post("/api/upload", content=b"").status_code == 400
        with client.websocket_connect("/ws") as ws:
            next_event(ws, "hello")
            ws.send_text(json.dumps({"type": "start", "upload_id": ok.json()["upload_id"]}))
            assert next_event(ws, "ready")["prompt"] == ""
            _, jpeg = frames(ws, 1)[0]
            assert np.asarray(Image.open(io.BytesIO(jpeg)))[16, 16, 0] > 150  # the red upload


def test_save_clip(tmp_path):
    options = PlayOptions(clip_seconds=0.5)
    with make_client(options=options) as client, client.websocket_connect("/ws") as ws:
        sid = next_event(ws, "hello")["session"]
        assert client.get(f"/api/sessions/{sid}/clip.mp4").status_code == 404  # no stream yet
        start(ws)
        ws.send_text(json.dumps({"type": "keys", "keys": ["KeyA"], "seq": 1}))
        frames(ws, 14)
        clip = client.get(f"/api/sessions/{sid}/clip.mp4")
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
        (tmp_path / "clip.mp4").write_bytes(clip.content)
        video = read_mp4(tmp_path / "clip.mp4")
        log = client.get(f"/api/sessions/{sid}/actions.json").json()
        assert video.shape[1:] == (32, 32, 3) and len(video) == 8  # 0.5 s at 16 fps
        assert len(log["frames"]) >= 8 and log["fps"] == 16 and log["memory"] == "relic"
        assert log["prompt"] == "fake scene 3" and log["source"]["scene_seed"] == 3
        assert any(e["keys"] == ["KeyA"] for e in log["frames"])
        assert client.get("/api/sessions/unknown/clip.mp4").status_code == 404


@pytest.mark.parametrize("gamma", [0.5, 3.0])
def test_gamma_slider_reaches_the_engine(gamma):
    model = FakeModel()
    with make_client(model) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws, gamma=1.0)
        ws.send_text(json.dumps({"type": "gamma", "gamma": gamma}))
        wait_until(lambda: model.started and model.started[0].gammas[-1:] == [gamma])


def test_real_engine_streams_through_the_server():
    """The untrained engine model behind the same protocol (about 15 s on 2 busy cores)."""
    from reverie.engine import WorldModel

    with make_client(WorldModel.random(seed=0)) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        ws.send_text(json.dumps({"type": "keys", "keys": ["KeyW"], "seq": 1}))
        assert start(ws, memory="relic", gamma=0.5)["memory"] == "relic"
        (first, jpeg), (moved, _) = frames(ws, 2)
        assert np.asarray(Image.open(io.BytesIO(jpeg))).shape == (64, 64, 3)
        assert first["frame"] == 0 and moved["frame"] == 1 and moved["seq"] == 1
        assert moved["action"] == {"dolly_in": 1.0} and moved["cache_tokens"] > 0


def test_a_client_that_stops_acking_gets_frames_dropped_not_queued():
    model = FakeModel()
    options = PlayOptions(ack_window=3)
    with make_client(model, options=options) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws)
        header, _ = frames(ws, 1)[0]
        ws.send_text(json.dumps({"type": "ack", "frame": header["frame"]}))
        got = frames(ws, 3)  # the window: 3 frames beyond the ack, then nothing
        assert [h["frame"] for h, _ in got] == [1, 2, 3]
        time.sleep(0.6)  # generation goes on meanwhile (about 10 frames at 16 fps)
        ws.send_text(json.dumps({"type": "ack", "frame": 3}))
        header, _ = frames(ws, 1)[0]
        assert header["frame"] >= 8 and header["dropped"] >= 4  # stale frames were dropped
        assert len(model.started[0].gammas) >= 2  # the engine kept stepping


def test_start_again_restarts_the_stream_and_keeps_held_keys():
    model = FakeModel()
    with make_client(model) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws)
        ws.send_text(json.dumps({"type": "keys", "keys": ["KeyW"], "seq": 1}))
        frames(ws, 6)
        ws.send_text(json.dumps({"type": "ack", "frame": 10_000}))  # not sent yet: ignored
        assert start(ws, scene_seed=4, memory="full")["memory"] == "full"
        header, _ = frames(ws, 1)[0]
        assert header["frame"] == 0  # a new stream
        wait_until(lambda: model.closed == 1 and len(model.started) == 2)
        assert frames(ws, 1)[0][0]["action"] == {"dolly_in": 1.0}
