"""`reverie eval follow`: generation from frame 0 scored next to its trivial baselines."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from evaluation_testing import OracleModel

from reverie.cli import main
from reverie.evaluation.follow import FollowConfig, format_table, run_follow
from reverie.evaluation.heldout import render_heldout, sample_heldout_path
from reverie.tokenizer import PatchTokenizer, PatchTokenizerConfig


class OracleFollowModel(OracleModel):
    """Generates the ground truth; its tokenizer is an untrained (identity-basis) one."""

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__(frames)
        self.vae = PatchTokenizer(PatchTokenizerConfig(patch_size=4, z_dim=16))

    def vae_autocast(self):
        return contextlib.nullcontext()


def test_oracle_scores_perfectly_and_baselines_do_not():
    cfg = FollowConfig(scenes=1, seconds=1.25)
    spec, traj = sample_heldout_path(0, cfg.family, cfg.seconds, 16)
    gt = render_heldout(0, spec, traj.R, traj.P, trajectory_seed=0, resolution=64, fps=16)
    result = run_follow(OracleFollowModel(gt.frames[:17]), cfg, progress=False)
    assert result["frames_per_scene"] == 17
    assert result["spans"] == {"first block": [1, 4], "first second": [1, 16]}
    rows = result["results"]
    assert rows["model"]["first second"]["ssim"] == 1.0  # identical frames
    assert rows["model"]["first second"]["psnr_db"] >= 60.0  # PSNR capped
    assert rows["tokenizer"]["first second"]["psnr_db"] < 60.0  # 16 of 192 values per tube
    # A moving camera: holding the start frame loses, and more so later in the second.
    start = rows["repeat start"]
    assert start["first second"]["psnr_db"] < 40.0
    assert start["first second"]["psnr_db"] <= start["first block"]["psnr_db"]
    assert "| repeat start |" in format_table(result)


def test_cli_random_model(tmp_path, capsys):
    out = tmp_path / "follow.json"
    args = ["eval", "follow", "--random", "--scenes", "1", "--seconds", "1", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"model", "tokenizer", "repeat start", "mean colour"}
    assert "| model |" in capsys.readouterr().out
    assert main([*args, "--policy", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_config_checks():
    with pytest.raises(ValueError, match="seconds"):
        FollowConfig(seconds=0.5)
