"""`reverie play` command line: wiring and clear errors (no server is started)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from play_testing import FakeModel

from reverie.cli import main
from reverie.play import cli as play_cli
from reverie.play import server as play_server


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()  # `reverie play` sets them (--threads)
    yield
    torch.set_num_threads(threads)


def test_missing_model_suggests_checkpoint_or_random(tmp_path, capsys):
    assert main(["play", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "reverie play: error:" in err and "--checkpoint" in err and "--random" in err


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--memory", "nonsense"], "unknown --memory"),
        (["--max-sessions", "0"], "--max-sessions"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_flags(monkeypatch, capsys, flags, words):
    monkeypatch.setattr(play_cli, "load_model", lambda *a, **k: FakeModel())
    assert main(["play", "--random", *flags]) == 2
    assert words in capsys.readouterr().err


def test_play_serves_the_app(monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient

    served = {}
    monkeypatch.setattr(play_cli, "load_model", lambda *a, **k: FakeModel())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setattr(play_server, "_render_pool", lambda: ThreadPoolExecutor(1))
    argv = ["play", "--random", "--port", "8123", "--max-sessions", "3", "--memory", "window"]
    assert main(argv) == 0
    assert served["port"] == 8123 and served["host"] == "127.0.0.1"
    with TestClient(served["app"], base_url="http://127.0.0.1:8123") as client:
        config = client.get("/api/config").json()
    assert config["max_sessions"] == 3 and config["default_memory"] == "window"
