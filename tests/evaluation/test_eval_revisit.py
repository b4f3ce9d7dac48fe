"""`reverie eval revisit`: event detection, scoring, and the whole command on tiny data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from evaluation_testing import OracleModel, turn_away_and_back

from reverie.cli import main
from reverie.evaluation import revisit
from reverie.evaluation.revisit import RevisitConfig, baselines, generate, score, summarize
from reverie.evaluation.revisit_episode import find_event, history_matches

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_find_event_on_turn_away_and_back():
    R, P = turn_away_and_back(97)  # 6 s: out for 3 s, back for 3 s
    cfg = {"min_gap_s": 1.0, "min_revisit_frames": 4}
    ev = find_event(R, P, 16, 4, **cfg)
    assert ev is not None
    assert ev["first_visit"] < ev["leave"] <= ev["memorize_end"] < ev["first_revisit"]
    assert ev["memorize_end"] % 4 == 0 and (ev["end"] - ev["memorize_end"] - 1) % 4 == 0
    assert ev["end"] <= 97
    # The camera has turned >= 90 deg away from the first visit at `leave`.
    axis = R[:, 2]
    assert axis[ev["leave"]] @ axis[ev["first_visit"]] <= 1e-9
    # A path that never comes back has no event.
    assert find_event(R[:49], P[:49], 16, 4, **cfg) is None


def test_history_matches_pick_the_same_pose():
    R, P = turn_away_and_back(17)
    frames = np.arange(13, 17)
    np.testing.assert_array_equal(history_matches(R, P, frames, 4, min_gap=2), 16 - frames)


def test_oracle_generation_scores_perfectly(tiny_episode):
    """A model that returns the ground truth: inf PSNR / SSIM 1 everywhere, exact commands."""
    model = OracleModel(tiny_episode.gt.frames)
    cfg = RevisitConfig(policies=("relic",))
    gen, info = generate(model, tiny_episode, "relic", cfg)
    assert gen.shape == (12, 64, 64, 3)
    s = score(tiny_episode, gen)
    assert np.isinf(s["psnr_gt"]).all() and np.all(s["ssim_gt"] == 1.0)
    # The return frames equal their history matches by construction.
    assert np.isinf(s["psnr_history"]).all() and np.isinf(s["psnr_best_history"]).all()
    assert info["command_error_m"] < 1e-6  # float32 actions
    assert info["memorized"]["frames"] == 5 and info["final"]["frames"] == 17
    summary = summarize([s], [tiny_episode])
    assert summary["revisit_psnr_gt"] == 100.0  # inf capped (metrics.PSNR_CAP_DB)
    b = baselines([tiny_episode])
    assert b["history_oracle"]["revisit_psnr_history"] == 100.0
    assert b["last_context_frame"]["psnr_gt"] < 20
    # the return ends on frame 0 itself: holding the start frame scores it exactly (capped)
    assert b["start_frame"]["revisit_psnr_gt"] > 25 > b["mean_colour"]["revisit_psnr_gt"]
    assert set(b["mean_colour"]) == {"psnr_gt", "ssim_gt", "revisit_psnr_gt"}


def test_revisit_command_with_random_model(tmp_path, monkeypatch, tiny_episode, capsys):
    monkeypatch.setattr(revisit, "build_episode", lambda *a, **k: tiny_episode)
    out = tmp_path / "revisit.json"
    argv = ["eval", "revisit", "--random", "--threads", "1", "--no-progress"]
    argv += ["--scenes", "1", "--policies", "window,relic", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    assert set(r["policies"]) == {"window", "relic"}
    for p in r["policies"].values():
        s = p["summary"]
        assert np.isfinite(s["revisit_psnr_gt"]) and 0 < s["max_cache_tokens"]
        assert s["max_cache_bytes"] > 0 and p["curve"][0]["n"] > 0
        assert p["episodes"][0]["command_error_m"] < 1e-6
        assert len(p["episodes"][0]["psnr_gt"]) == 12
    assert r["relic_vs_window"]["episodes"] == 1
    assert r["model"]["source"] == "random"
    assert "relic - window" in capsys.readouterr().out
    # The README figure: scripts/plot_revisit.py turns this JSON into a PNG.
    spec = importlib.util.spec_from_file_location("plot_revisit", SCRIPTS / "plot_revisit.py")
    plot_revisit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_revisit)
    png = tmp_path / "revisit.png"
    assert plot_revisit.main([str(out), "--out", str(png), "--min-count", "1"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_revisit_rejects_training_scenes(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"scene_seed": 1_000_000}) + "\n")
    argv = ["eval", "revisit", "--random", "--scenes", "1", "--out", str(tmp_path / "r.json")]
    assert main(argv + ["--training-manifest", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "flags",
    [
        ["--random", "--policies", "window,nope"],
        ["--checkpoint", "/nonexistent/model"],
        ["--random", "--scenes", "0"],
    ],
)
def test_revisit_bad_inputs_exit_2(tmp_path, flags, capsys):
    assert main(["eval", "revisit", *flags, "--out", str(tmp_path / "r.json")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_default_policies_are_every_registered_one_in_table_order():
    from reverie.evaluation.policies import TABLE_ORDER, default_policies
    from reverie.evaluation.speed import SpeedConfig
    from reverie.memory import policy_names

    names = default_policies()
    assert sorted(names) == policy_names()
    assert [n for n in names if n in TABLE_ORDER] == [n for n in TABLE_ORDER if n in names]
    assert RevisitConfig().policies == SpeedConfig().policies == names


def test_find_event_can_memorize_up_to_the_return():
    """`memorize_until="return"` (diagnostic): the same event, memorized up to the last step
    before the first revisit, so only the return leg is generated."""
    R, P = turn_away_and_back(97)
    cfg = {"min_gap_s": 1.0, "min_revisit_frames": 4}
    leave = find_event(R, P, 16, 4, **cfg)
    back = find_event(R, P, 16, 4, **cfg, memorize_until="return")
    assert {k: back[k] for k in ("first_visit", "leave", "first_revisit", "run_end")} == {
        k: leave[k] for k in ("first_visit", "leave", "first_revisit", "run_end")
    }
    assert leave["memorize_end"] <= back["memorize_end"] < back["first_revisit"]
    assert back["first_revisit"] - back["memorize_end"] <= 4 and back["memorize_end"] % 4 == 0
    assert (back["end"] - back["memorize_end"] - 1) % 4 == 0 and back["end"] <= 97
    assert all(type(v) is int for v in back.values())  # JSON-ready
    with pytest.raises(ValueError, match="memorize_until"):
        find_event(R, P, 16, 4, **cfg, memorize_until="never")
