"""`reverie eval actions` and `reverie eval speed` on the untrained tiny model."""

from __future__ import annotations

import json

import numpy as np
import torch

from reverie.cli import main
from reverie.engine import WorldModel
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


def test_speed_reports_windows_rss_and_stops_at_the_wall_limit(tmp_path):
    out = tmp_path / "speed.json"
    argv = ["eval", "speed", "--random", "--threads", "1", "--no-progress", "--minutes", "0.05"]
    argv += ["--policies", "window", "--warmup-steps", "1", "--kv-dtype", "bf16"]
    assert main(argv + ["--out", str(out)]) == 0
    window = json.loads(out.read_text())["policies"]["window"]
    first, last = window["first_minute"], window["last_minute"]
    assert first["steps"] == window["steps"] - 1 == 11  # 3 s of video, warm-up step left out
    assert first["to_s"] == last["to_s"] == window["seconds"] == 3.0 and last["from_s"] == 0.0
    assert window["last_over_first_p50"] == 1.0 and not window["stopped_early"]
    assert window["rss_1min_bytes"] is None and window["curve"][-1]["rss_bytes"] > 0
    config = WorldModel.random().dit.config
    per_token = config.num_layers * 2 * config.dim * 2  # K and V in bf16
    assert window["final_cache_bytes"] == window["final_cache_tokens"] * per_token
    limited = argv[:-4] + ["--policies", "full", "--wall-limit-minutes", "0.0001"]
    assert main(limited + ["--out", str(out)]) == 0
    full = json.loads(out.read_text())["policies"]["full"]
    assert full["stopped_early"] and full["steps"] < 12


def test_kv_dtype_names_match_the_engine():
    from reverie.engine.world_model import KV_DTYPES
    from reverie.evaluation.cli import KV_DTYPE_CHOICES

    assert KV_DTYPE_CHOICES == tuple(KV_DTYPES)


def test_side_by_side_times_the_long_session_against_a_young_one():
    from reverie.evaluation.speed import SpeedConfig, run_speed

    model = WorldModel.random()
    cfg = SpeedConfig(
        minutes=0.05, policies=("relic",), compare_age_s=1.0, compare_rounds=2, compare_steps=3
    )
    relic = run_speed(model, cfg, progress=False)["policies"]["relic"]
    side = relic["side_by_side"]
    assert side["rounds"] == 2 and side["steps_per_round"] == 2
    assert side["long_over_reference_p50"] == side["long_p50_s"] / side["reference_p50_s"] > 0
    # Video frames at 16 fps: the start frame, then 4 per step: 12 steps streamed (3 s) or 4
    # (the reference's 1 s), one more denoised ahead by the pipeline, 2 rounds of 3 steps.
    assert side["long_age_s"] == (1 + 4 * (12 + 1 + 6)) / 16
    assert side["reference_age_s"] == (1 + 4 * (4 + 1 + 6)) / 16
    short = SpeedConfig(minutes=0.05, policies=("window",), compare_age_s=2.0)
    assert run_speed(model, short, progress=False)["policies"]["window"]["side_by_side"] is None
