"""`reverie eval actions` and `reverie eval speed` on the untrained tiny model."""

from __future__ import annotations

import json

import numpy as np
import torch

from reverie.cli import main
from reverie.evaluation.probe import PoseProbe, PoseProbeConfig, save_probe


def test_actions_command(tmp_path, capsys):
    torch.manual_seed(0)
    save_probe(PoseProbe(PoseProbeConfig()), tmp_path / "probe")
    out = tmp_path / "actions.json"
    argv = ["eval", "actions", "--random", "--threads", "1", "--no-progress"]
    argv += ["--probe", str(tmp_path / "probe"), "--scenes", "1", "--seconds", "1"]
    assert main(argv + ["--out", str(out)]) == 0
    r = json.loads(out.read_text())
    row = r["policies"]["relic"]["episodes"][0]
    assert row["command_error_m"] < 1e-5  # gamma replays the ground-truth path
    assert set(r["references"]) == {"ground_truth", "static"}
    assert r["episodes"][0]["frames"] == 17  # 1 + 4 steps of 4 frames
    assert "RPE trans" in capsys.readouterr().out
    bad = ["eval", "actions", "--random", "--probe", str(tmp_path / "nope")]
    assert main(bad + ["--out", str(tmp_path / "x.json")]) == 2


def test_speed_command(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["eval", "speed", "--random", "--threads", "1", "--no-progress", "--minutes", "0.02"]
    assert main(argv + ["--policies", "full,window", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["policies"]) == {"full", "window"}
    full = r["policies"]["full"]
    assert full["steps"] == 5 and full["fps"] > 0 and full["latency_p95_s"] > 0
    tokens = [c["cache_tokens"] for c in full["curve"]]
    assert tokens == sorted(tokens) and full["max_cache_tokens"] == tokens[-1]
    assert np.isfinite(r["policies"]["window"]["realtime_factor"])
    assert "FPS" in capsys.readouterr().out
