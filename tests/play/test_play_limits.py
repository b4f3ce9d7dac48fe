"""Bounded play sessions: idle connections close, stalled clients pause their stream, streams
end at a maximum length or cache size, and the prompt cache is an LRU."""

from __future__ import annotations

import json
import time

from play_testing import FakeModel
from test_play_server import frames, make_client, next_event, receive, start, wait_until

from reverie.play.session import PlayOptions


def test_an_idle_connection_is_closed_and_its_slot_freed():
    options = PlayOptions(idle_timeout_s=0.3)
    with make_client(options=options, max_sessions=1) as client:
        with client.websocket_connect("/ws") as ws:
            next_event(ws, "hello")
            error = next_event(ws, "error")
            assert "without a message" in error["message"]
            assert receive(ws) == {"type": "<closed>", "code": 1001}
        assert client.get("/api/status").json()["active"] == 0


def test_a_client_that_stops_reading_pauses_the_stream():
    model = FakeModel()
    options = PlayOptions(ack_window=2, stall_pause_s=0.2)
    with make_client(model, options=options) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws)
        header, _ = frames(ws, 1)[0]
        ws.send_text(json.dumps({"type": "ack", "frame": header["frame"]}))
        frames(ws, 2)  # the window; then the client stops acknowledging
        time.sleep(0.5)
        steps = len(model.started[0].gammas)
        time.sleep(0.5)
        assert len(model.started[0].gammas) == steps  # paused: no compute for nobody
        ws.send_text(json.dumps({"type": "ack", "frame": header["frame"] + 2}))
        wait_until(lambda: len(model.started[0].gammas) > steps)  # back: it goes on


def test_a_stream_ends_at_its_maximum_length():
    options = PlayOptions(max_stream_s=0.5)  # 8 frames at 16 fps
    with make_client(options=options) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws)
        error = next_event(ws, "error")
        assert error["stopped"] and "maximum length" in error["message"]
        start(ws)  # a new stream may start on the same connection
        frames(ws, 1)


def test_a_stream_ends_at_its_cache_cap():
    options = PlayOptions(max_cache_mb=10 * 1024 / 2**20)  # FakeSession: 1 KB per frame
    with make_client(options=options) as client, client.websocket_connect("/ws") as ws:
        next_event(ws, "hello")
        start(ws, memory="full")
        error = next_event(ws, "error")
        assert error["stopped"] and "full memory cache reached its limit" in error["message"]


def test_the_prompt_cache_is_a_bounded_lru():
    from reverie.engine import WorldModel
    from reverie.engine.world_model import PROMPT_CACHE_SIZE

    model = WorldModel.random(0)
    first = model.encode_prompt("prompt 0")
    for i in range(1, PROMPT_CACHE_SIZE + 5):
        model.encode_prompt(f"prompt {i}")
        model.encode_prompt("prompt 0")  # used again: stays
    assert len(model._prompt_cache) == PROMPT_CACHE_SIZE
    assert model.encode_prompt("prompt 0") is first and "prompt 1" not in model._prompt_cache
