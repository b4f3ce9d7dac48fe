"""End to end in headless Chromium (Playwright + Debian's /usr/bin/chromium, no downloads).

The page is driven like a person would: start a scene, hold keys, watch frames change, read the
FPS readout; then more tabs than the session limit. With ``REVERIE_SCREENSHOT=path`` the first
test saves a screenshot of the page there (docs/images/play.png); ``REVERIE_PLAY_TEST_MODEL=random``
(or ``default``: the shipped model) runs it on the engine instead of the fast fake (slower, for
the screenshot).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from play_testing import FakeModel, fake_render_scene

from reverie.play.server import create_app, serve_in_background

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; "
    "`bash scripts/install.sh dev` installs it as root)",
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def test_play_page_streams_and_reacts_to_keys(browser, request):
    which = os.environ.get("REVERIE_PLAY_TEST_MODEL")
    if which in ("random", "default"):
        from reverie.engine import WorldModel

        torch = pytest.importorskip("torch")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as `reverie play` does
        request.addfinalizer(lambda: torch.set_num_threads(threads))
        model = WorldModel.random(seed=0) if which == "random" else WorldModel.from_pretrained()
        patience_ms = 120_000
    else:
        model, patience_ms = FakeModel(), 15_000
    with serve_in_background(create_app(lambda: model, default_memory="relic")) as url:
        page = browser.new_page(viewport={"width": 960, "height": 700})
        page.goto(url)
        page.wait_for_function("window.reverie.session !== null")
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
        page.fill("#seed", "11")
        page.fill("#prompt", "")
        page.click("#start")
        page.wait_for_function("window.reverie.frames >= 6", timeout=patience_ms)
        still = page.evaluate("window.reverie.snapshot()")

        page.click("#screen")
        page.keyboard.down("KeyD")
        page.keyboard.down("ArrowUp")
        page.wait_for_function(
            "window.reverie.lastHeader.seq === 2 && window.reverie.latencies.length > 0",
            timeout=patience_ms,
        )
        seen = page.evaluate("window.reverie.frames")
        page.wait_for_function(f"window.reverie.frames >= {seen + 8}", timeout=patience_ms)
        header = page.evaluate("window.reverie.lastHeader")
        assert header["action"] == {"truck_right": 1.0, "tilt_up": 2.0}
        assert page.evaluate("window.reverie.snapshot()") != still  # the picture moved
        assert page.text_content("#held-keys") == "KeyD + ArrowUp"
        fps = page.text_content("#fps")
        assert float(fps) > 0, fps
        assert page.text_content("#latency").endswith("ms")
        assert "tok" in page.text_content("#cache")
        if path := os.environ.get("REVERIE_SCREENSHOT"):
            page.screenshot(path=path)
        page.keyboard.up("KeyD")
        page.keyboard.up("ArrowUp")

        # Bad input shows a message and the session goes on.
        page.evaluate("window.reverie.ws.send('not json')")
        page.wait_for_selector("#message:not([hidden])")
        assert "not valid JSON" in page.text_content("#message")
        frames = page.evaluate("window.reverie.frames")
        page.wait_for_function(f"window.reverie.frames > {frames}", timeout=patience_ms)
        page.check("input[name=source][value=upload]")
        page.set_input_files(
            "#file", files=[{"name": "bad.png", "mimeType": "image/png", "buffer": b"oops"}]
        )
        page.click("#start")
        page.wait_for_function(
            "document.getElementById('message').textContent.includes('Upload failed')"
        )
        assert "not a readable image" in page.text_content("#message")
        page.close()


def wait_for_active(url: str, active: int, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while httpx.get(f"{url}/api/status").json()["active"] != active:
        assert time.monotonic() - t0 < timeout, "the session was not freed"
        time.sleep(0.05)


def test_more_tabs_than_sessions_get_busy_and_closing_frees_one(browser):
    app = create_app(
        FakeModel,
        max_sessions=2,
        render_scene=fake_render_scene,
        render_executor=lambda: ThreadPoolExecutor(1),
    )
    with serve_in_background(app) as url:
        context = browser.new_context()
        tabs = [context.new_page() for _ in range(3)]
        for tab in tabs[:2]:
            tab.goto(url)
            tab.wait_for_function("window.reverie.session !== null")
        tabs[2].goto(url)
        tabs[2].wait_for_selector("#message.busy:not([hidden])")
        assert "Busy" in tabs[2].text_content("#message")
        assert tabs[2].is_disabled("#start")
        tabs[0].close()  # frees its session
        wait_for_active(url, 1)
        tabs[2].click("#message button")  # Retry
        tabs[2].wait_for_function("window.reverie.session !== null")
        assert tabs[2].is_hidden("#message")
        context.close()
