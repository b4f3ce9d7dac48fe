"""`reverie explore` end to end on an untrained tiny model (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reverie.cli import main
from reverie.data.video import read_mp4
from reverie.explore import fit_actions, frame_count

METRIC_KEYS = {
    "fps_end_to_end",
    "fps_denoise",
    "first_frame_latency_s",
    "peak_rss_mb",
    "cache_tokens",
    "cache_bytes",
    "frames",
    "memory_policy",
    "checkpoint",
}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_scene_writes_videos_ground_truth_and_metrics(tmp_path):
    out = tmp_path / "run" / "out.mp4"
    code = main(
        ["explore", "--random", "--scene", "1000003", "--seconds", "1", "--memory", "window",
         "--out", str(out), "--json", str(tmp_path / "m.json"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    video, gt = read_mp4(out), read_mp4(out.with_suffix(".gt.mp4"))
    compare = read_mp4(out.with_suffix(".compare.mp4"))
    assert len(video) == len(gt) == len(compare) == metrics["frames"] == 17  # 1 + 4 k
    assert compare.shape[2] == 2 * video.shape[2]
    assert len(metrics["psnr"]) == len(metrics["ssim"]) == 17
    assert metrics["memory_policy"] == "window" and metrics["checkpoint"] == "random"
    assert metrics["fps_end_to_end"] > 0 and metrics["cache_tokens"] > 0


def test_image_with_action_script(tmp_path):
    image = tmp_path / "start.jpg"
    Image.fromarray(np.full((48, 80, 3), 120, np.uint8)).save(image)
    out = tmp_path / "img.mp4"
    code = main(
        ["explore", "--random", "--image", str(image), "--prompt", "a grey wall",
         "--actions", "pan_left*4 dolly_in*4", "--seconds", "0.5", "--out", str(out),
         "--json", str(tmp_path / "m.json"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["frames"] == len(read_mp4(out)) == 9
    assert "psnr" not in metrics and not out.with_suffix(".gt.mp4").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scene", "1", "--image", "x.png"], "exactly one"),
        (["--scene", "1", "--actions", "fly*4"], "unknown action"),
        (["--scene", "1", "--gamma", "-1"], "gamma"),
        (["--scene", "1", "--out", "video.avi"], ".mp4"),
        (["--image", "missing.png"], "not found"),
    ],
)
def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys, extra, message):
    code = main(["explore", "--random", "--seconds", "0.5", "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_corrupt_image_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    code = main(["explore", "--random", "--image", str(bad), "--seconds", "0.5", "--quiet",
                 "--out", str(tmp_path / "o.mp4")])  # fmt: skip
    assert code == 2
    assert "not a readable image" in capsys.readouterr().err


def test_frame_count_and_fit_actions():
    assert frame_count(10, 16, 4) == 161
    assert frame_count(0.01, 16, 4) == 5  # at least one step
    with pytest.raises(ValueError):
        frame_count(0, 16, 4)
    a = fit_actions(np.ones((4, 13), np.float32), 5)
    assert a.shape == (5, 13) and a[0, 12] == 1 and a[0, :12].sum() == 0
    with pytest.raises(ValueError, match="2 actions given, 4 needed"):
        fit_actions(np.ones((2, 13), np.float32), 5)  # never a held last action
    with pytest.raises(ValueError, match="at most"):
        frame_count(1e9, 16, 4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--actions", "pan_left*6"], "use 5 or 9 frames"),  # 7 frames: not 1 + 4 k
        (["--actions", "pan_left*4", "--seconds", "2"], "drop --seconds"),
        (["--actions", "pan_left*100000000"], "at most"),
        (["--seconds", "1e9"], "at most"),
        (["--gamma", "100"], "[0.05, 4.0]"),
    ],
)
def test_lengths_and_limits_are_checked_before_work(tmp_path, capsys, extra, message):
    out = tmp_path / "o.mp4"
    assert main(["explore", "--random", "--scene", "1", "--quiet", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_action_script_sets_the_length(tmp_path):
    out = tmp_path / "o.mp4"
    code = main(["explore", "--random", "--scene", "1", "--actions", "pan_left*4 dolly_in*8",
                 "--quiet", "--out", str(out), "--json", str(tmp_path / "m.json")])  # fmt: skip
    assert code == 0 and len(read_mp4(out)) == 13


def test_the_cli_is_a_shell_over_explore_config():
    """`reverie explore`'s options are `ExploreConfig`'s fields, with the same defaults."""
    from dataclasses import fields

    from reverie.cli import build_parser
    from reverie.explore import ExploreConfig

    args = build_parser().parse_args(["explore", "--scene", "1"])
    options = {f.name: getattr(args, f.name) for f in fields(ExploreConfig)}
    assert ExploreConfig(**options) == ExploreConfig(scene=1)
    with pytest.raises(ValueError, match="--threads"):
        ExploreConfig(scene=1, threads=0)  # checked on construction, before any model
