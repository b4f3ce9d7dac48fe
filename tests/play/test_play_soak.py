"""A bounded soak test of `reverie play` over loopback (issue 13): 100 connect/disconnect cycles
through a real uvicorn server and 200 unique prompts through the engine's text path.

Bounds: resident memory grows by less than ``RSS_BOUND_MB`` over each soak once warm, and every
session slot is free at the end. Fixed counts, about 10 s on a busy 2-core CPU.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from play_testing import FakeModel, fake_render_scene
from websockets.sync.client import connect

from reverie.play.server import create_app, serve_in_background

RSS_BOUND_MB = 25.0
CYCLES, WARM_CYCLES = 100, 10
PROMPTS = 200


def rss_mb() -> float:
    """Current (not peak) resident set size of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_connect_disconnect_cycles_free_every_slot_and_bound_memory():
    app = create_app(
        FakeModel,
        max_sessions=2,
        render_scene=fake_render_scene,
        render_executor=lambda: ThreadPoolExecutor(1),
    )
    with serve_in_background(app) as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        warm = None
        for i in range(CYCLES):
            if i == WARM_CYCLES:
                warm = rss_mb()
            with connect(ws_url, open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "hello"
                start = {"type": "start", "scene_seed": i % 5, "prompt": f"soak prompt {i}"}
                ws.send(json.dumps(start))
                while not isinstance(message := ws.recv(timeout=10), bytes):  # a frame
                    assert json.loads(message)["type"] == "ready", message
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/api/status").json()["active"] != 0:
            assert time.monotonic() < deadline, "a session slot was not recovered"
            time.sleep(0.05)
        growth = rss_mb() - warm
    assert growth < RSS_BOUND_MB, f"RSS grew {growth:.1f} MB over {CYCLES - WARM_CYCLES} cycles"


def test_unique_prompts_bound_memory():
    from reverie.engine import WorldModel
    from reverie.engine.world_model import PROMPT_CACHE_SIZE

    model = WorldModel.random(0)
    for i in range(3 * PROMPT_CACHE_SIZE):  # warm: the cache is full, the allocator settled
        model.encode_prompt(f"a warm-up room number {i}")
    warm = rss_mb()
    for i in range(PROMPTS):
        model.encode_prompt(f"a unique soak prompt {i}: a {'red ' * (i % 7)}room with a door")
    growth = rss_mb() - warm
    assert len(model._prompt_cache) == PROMPT_CACHE_SIZE
    assert growth < RSS_BOUND_MB, f"RSS grew {growth:.1f} MB over {PROMPTS} prompts"
