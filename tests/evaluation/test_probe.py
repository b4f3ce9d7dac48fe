"""The pose probe: save/load, input checks, and `reverie eval train-probe` on a tiny dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reverie.cli import main
from reverie.evaluation.probe import (
    PoseProbe,
    PoseProbeConfig,
    load_probe,
    recover_trajectory,
    save_probe,
)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    probe = PoseProbe(PoseProbeConfig(resolution=32, target_std=(0.1,) * 3 + (2.0,) * 3))
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    before = probe.predict(frames[:-1], frames[1:])
    save_probe(probe, tmp_path / "p")
    loaded = load_probe(tmp_path / "p")
    np.testing.assert_allclose(loaded.predict(frames[:-1], frames[1:]), before, atol=1e-6)
    assert loaded.config == probe.config
    R, P = recover_trajectory(loaded, frames)  # stride 4: frames 0, 4, 8
    assert R.shape == (3, 3, 3) and P.shape == (3, 3)
    size = (tmp_path / "p" / "probe.safetensors").stat().st_size
    assert size < 2 * 2**20 or loaded.config.resolution != 64


def test_default_probe_is_small():
    n = sum(p.numel() for p in PoseProbe(PoseProbeConfig()).parameters())
    assert 4 * n < 2 * 2**20  # < 2 MB in float32


def test_bad_inputs(tmp_path):
    probe = PoseProbe(PoseProbeConfig(resolution=32))
    with pytest.raises(ValueError, match="32"):
        probe.predict(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="train-probe"):
        load_probe(tmp_path)
    with pytest.raises(ValueError, match="multiple of 16"):
        PoseProbeConfig(resolution=40)


def test_train_probe_command_on_tiny_dataset(tmp_path, capsys):
    data = tmp_path / "data"
    render = ["render", "--out", str(data), "--episodes", "2", "--seconds", "1"]
    assert main(render + ["--resolution", "16", "--world", "rooms"]) == 0
    out = tmp_path / "probe"
    argv = ["eval", "train-probe", "--data", str(data), "--out", str(out), "--no-progress"]
    argv += ["--steps", "3", "--batch", "4", "--heldout-scenes", "1", "--heldout-seconds", "1"]
    assert main(argv) == 0
    meta = json.loads((out / "probe.json").read_text())
    report = meta["report"]
    assert report["train_episodes"] == 1 and report["val_episodes"] == 1
    assert report["heldout_gt"]["probe"]["n"] in (0, 1)
    assert load_probe(out).config.resolution == 16
    assert "heldout_gt" in capsys.readouterr().out
    assert main(["eval", "train-probe", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
