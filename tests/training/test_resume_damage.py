"""Resume survives damage: crashes at random points, truncated and empty checkpoint files, a
SIGKILL mid-run; every resumed run ends with the uninterrupted run's weights, bit for bit."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_testing import CONFIG, run_toy, toy_args, weights

from reverie.cli import main
from reverie.training import checkpoint as checkpoint_module
from reverie.training.checkpoint import checkpoint_dirs, latest_intact_checkpoint
from reverie.training.stages.toy import ToyStage

RUN = [
    "trainer.max_steps=8",
    "trainer.checkpoint_every=1",
    "trainer.keep_checkpoints=2",
    "trainer.ema_modules=[model]",
    "model.dropout=0.1",
    "data.jitter=0.1",
]
STEPS = 8


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The final weights of the uninterrupted run."""
    run = tmp_path_factory.mktemp("full")
    run_toy(run, *RUN)
    return weights(run, STEPS), weights(run, STEPS, "model.ema")


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_random_crashes_and_damage_always_resume_to_the_same_weights(
    tmp_path, monkeypatch, reference, caplog
):
    """Six interruptions at seeded random points: an exception during a step, a crash while a
    checkpoint file is half written, and damage to the newest checkpoint after the fact
    (truncated weights / optimizer, empty trainer_state.json). Then resume to the end."""
    rng = random.Random(13)
    run = tmp_path / "run"
    real_loss, real_save = ToyStage.loss, checkpoint_module.save_file
    calls = {"n": 0, "crash_at": 0}

    def crashing_loss(self, update, batch):
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise RuntimeError("simulated crash in a step")
        return real_loss(self, update, batch)

    def crashing_save(tensors, path):
        calls["n"] += 1
        real_save(tensors, path)
        if calls["n"] == calls["crash_at"]:
            truncate(Path(path))
            raise OSError("simulated crash while writing a checkpoint")

    for attempt in range(6):
        kind = ("step", "write", "damage")[attempt % 3]
        # in micro-batches / checkpoint files written from the start of this attempt
        calls.update(n=0, crash_at=rng.randint(1, 2 * STEPS))
        if kind == "step":
            monkeypatch.setattr(ToyStage, "loss", crashing_loss)
        elif kind == "write":
            monkeypatch.setattr(checkpoint_module, "save_file", crashing_save)
        try:
            run_toy(run, *RUN, resume=True)
        except (RuntimeError, OSError) as e:
            assert "simulated" in str(e)
        monkeypatch.setattr(ToyStage, "loss", real_loss)
        monkeypatch.setattr(checkpoint_module, "save_file", real_save)
        if kind == "damage" and checkpoint_dirs(run):
            newest = checkpoint_dirs(run)[-1]
            victim = rng.choice(["model.safetensors", "optimizer.pt", "trainer_state.json"])
            truncate(newest / victim, keep=0.0 if victim.endswith(".json") else 0.5)
            assert victim in str(latest_intact_checkpoint(run)[1][0][1])
    with caplog.at_level(logging.WARNING):
        result = run_toy(run, *RUN, resume=True)
    assert result.step == STEPS
    assert same(weights(run, STEPS), reference[0])
    assert same(weights(run, STEPS, "model.ema"), reference[1])


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog, reference):
    run = tmp_path / "run"
    run_toy(run, *RUN, "trainer.max_steps=5")
    truncate(run / "checkpoints" / "step_00000005" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        result = run_toy(run, *RUN, resume=True)
    assert "step_00000005 is damaged" in caplog.text and "older step_00000004" in caplog.text
    assert "model.safetensors is truncated" in caplog.text
    assert (run / "checkpoints" / "damaged-step_00000005").is_dir()  # kept for inspection
    assert result.step == STEPS and same(weights(run, STEPS), reference[0])


def test_every_checkpoint_damaged_is_an_error_naming_the_files(tmp_path, capsys):
    run = tmp_path / "run"
    run_toy(run, *RUN, "trainer.max_steps=2")
    for ckpt in checkpoint_dirs(run):
        (ckpt / "trainer_state.json").write_text("")
    argv = ["train", "toy", "--config", str(CONFIG), "--resume", *toy_args(run, *RUN)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "every checkpoint is damaged" in err and "trainer_state.json is empty" in err


def test_resume_with_nothing_to_resume(tmp_path, capsys, caplog):
    argv = ["train", "toy", "--config", str(CONFIG), *toy_args(tmp_path / "new", *RUN)]
    assert main([*argv, "--resume=must"]) == 2
    assert "--resume=must" in capsys.readouterr().err and not (tmp_path / "new").exists()
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "trainer.max_steps=1", "--resume"]) == 0
    assert "nothing to resume" in caplog.text and "starting fresh" in caplog.text


def test_sigkill_mid_run_then_resume(tmp_path, reference):
    """A real kill -9 of `reverie train` once its first checkpoint exists (any later moment:
    in a step or in a checkpoint write); the resumed run ends with the same weights."""
    run = tmp_path / "run"
    argv = ["train", "toy", "--config", str(CONFIG), *toy_args(run, *RUN)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reverie.cli", *argv], env=env)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint_dirs(run) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert main([*argv, "--resume"]) == 0
    assert same(weights(run, STEPS), reference[0])
