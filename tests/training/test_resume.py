"""Checkpoints and resume: a killed-and-resumed run continues exactly like an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from training_testing import losses, run_toy, weights

from reverie.training import checkpoint as checkpoint_module
from reverie.training.checkpoint import checkpoint_dirs, latest_checkpoint
from reverie.training.metrics import read_metrics
from reverie.training.stages.toy import ToyStage

# Everything that carries state across steps: dropout (torch RNG), per-sample jitter (data RNG),
# EMA, warm-up scheduler, Adam moments, accumulation (data offset = step * grad_accum).
STATEFUL = [
    "trainer.max_steps=6",
    "trainer.checkpoint_every=3",
    "trainer.grad_accum=2",
    "trainer.ema_modules=[model]",
    "model.dropout=0.1",
    "data.jitter=0.1",
    "optim.warmup_steps=4",
]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_crash_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    run_toy(full, *STATEFUL)

    calls = {"n": 0}
    original = ToyStage.loss

    def dies_in_step_5(self, update, batch):
        calls["n"] += 1
        if calls["n"] > 4 * 2:  # 2 micro-batches per step
            raise RuntimeError("simulated crash")
        return original(self, update, batch)

    monkeypatch.setattr(ToyStage, "loss", dies_in_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_toy(crashed, *STATEFUL)
    assert [p.name for p in checkpoint_dirs(crashed)] == ["step_00000003"]
    assert [r["step"] for r in read_metrics(crashed)] == [1, 2, 3, 4]  # step 4 was logged

    monkeypatch.setattr(ToyStage, "loss", original)
    result = run_toy(crashed, *STATEFUL, resume=True)
    assert result.step == 6
    assert [r["step"] for r in read_metrics(crashed)] == [1, 2, 3, 4, 5, 6]  # 4 re-done once
    assert losses(crashed) == losses(full)  # bitwise: the floats are identical
    assert_same_tensors(weights(crashed, 6), weights(full, 6))
    assert_same_tensors(weights(crashed, 6, "model.ema"), weights(full, 6, "model.ema"))
    optim_full = torch.load(full / "checkpoints/step_00000006/optimizer.pt", weights_only=True)
    optim_resumed = torch.load(
        crashed / "checkpoints/step_00000006/optimizer.pt", weights_only=True
    )
    state_full = optim_full["optimizers"]["model"]["state"]
    state_resumed = optim_resumed["optimizers"]["model"]["state"]
    for name in state_full:
        assert_same_tensors(state_full[name], state_resumed[name])
    assert optim_full["schedulers"] == optim_resumed["schedulers"]


def test_stopping_at_max_steps_and_extending_matches(tmp_path):
    full, staged = tmp_path / "full", tmp_path / "staged"
    run_toy(full, *STATEFUL)
    run_toy(staged, *STATEFUL, "trainer.max_steps=3")
    run_toy(staged, *STATEFUL, resume=True)  # max_steps may change on resume
    assert losses(staged) == losses(full)
    assert_same_tensors(weights(staged, 6), weights(full, 6))


def test_keeps_the_newest_checkpoints_and_survives_a_failed_save(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_toy(run, "trainer.max_steps=4", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2")
    assert [p.name for p in checkpoint_dirs(run)] == ["step_00000003", "step_00000004"]

    real_save = checkpoint_module.save_file

    def half_written(tensors, path):
        real_save(tensors, path)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        run_toy(run, "trainer.max_steps=5", "trainer.checkpoint_every=1", resume=True)
    assert latest_checkpoint(run).name == "step_00000004"  # the partial step 5 is invisible
    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    result = run_toy(run, "trainer.max_steps=5", "trainer.checkpoint_every=1", resume=True)
    assert result.checkpoint.name == "step_00000005"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_an_existing_run_needs_resume_and_a_matching_config(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_toy(run, "trainer.max_steps=2")
    with pytest.raises(ValueError, match="--resume"):
        run_toy(run, "trainer.max_steps=4")
    with pytest.raises(ValueError, match=r"model\.hidden: 16 in the checkpoint, 32 now"):
        run_toy(run, "trainer.max_steps=4", "model.hidden=32", resume=True)
    # A stage that allowed the change still cannot load weights of another shape.
    monkeypatch.setattr(ToyStage, "resumable_changes", ("trainer", "model"))
    with pytest.raises(ValueError, match=r"does not fit: .*\(16, 8\) in the checkpoint"):
        run_toy(run, "trainer.max_steps=4", "model.hidden=32", resume=True)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    result = run_toy(tmp_path / "new", "trainer.max_steps=2", resume=True)
    assert result.step == 2 and sorted(losses(tmp_path / "new")) == [1, 2]
