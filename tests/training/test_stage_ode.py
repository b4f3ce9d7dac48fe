"""The ``ode`` stage: the time grid, exact recording on an analytic flow, resumable trajectory
shards from a small trained teacher, bad inputs. Holds the helper the ``student`` tests use."""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from test_encode import make_latents
from test_stage_teacher import fake_text_encoder, train_teacher

from reverie.diffusion import FewStepSchedule, noisy_sample
from reverie.training import train
from reverie.training.stages import ode as ode_module
from reverie.training.stages.ode import ode_time_grid, teacher_trajectory
from reverie.training.trajectories import OdeDataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "ode.yaml"
TIMES = FewStepSchedule().times


def ode_args(run_dir: Path, teacher: Path, latents: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"trainer.run_dir={run_dir}",
        f"ode.teacher={teacher}",
        f"ode.latents={latents}",
        f"ode.out={out}",
        "ode.clip_latent_frames=4",
        "ode.clips_per_shard=2",
        "ode.num_steps=8",
        "trainer.max_steps=2",
        "trainer.progress=false",
        "trainer.device=cpu",
        *extra,
    ]


def make_trajectories(root: Path, *extra: str) -> tuple[Path, Path, Path]:
    """Latents -> 2-step teacher -> 2 shards of 2 trajectories: ``(latents, teacher, out)``."""
    latents = make_latents(root)
    teacher = root / "teacher"
    # two large steps without EMA: a velocity far from zero (the output head starts at zero)
    fast = ("optim.lr=1e-2", "optim.warmup_steps=0", "trainer.ema_modules=[]")
    train_teacher(teacher, latents, "trainer.max_steps=2", *fast)
    with fake_text_encoder():
        train("ode", CONFIG, ode_args(root / "ode_run", teacher, latents, root / "ode", *extra))
    return latents, teacher, root / "ode"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_trajectories(tmp_path_factory.mktemp("ode"))


@pytest.fixture(autouse=True)
def fake_text():
    with fake_text_encoder():
        yield


def test_time_grid_holds_the_student_times():
    grid = ode_time_grid(8, 5.0, TIMES)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and all(a > b for a, b in pairwise(grid))
    assert all(t in grid for t in TIMES)
    assert len(ode_time_grid(48, 5.0, TIMES)) == 49  # 48 steps: the times are grid points


def test_records_the_exact_flow_of_a_point_mass():
    # data = c: the flow velocity is (x - c) / t and Euler steps are exact on it
    c, noise = torch.randn(1, 3, 2, 2, 2), torch.randn(1, 3, 2, 2, 2)

    def velocity(x, t):
        return (x - c) / t[:, None, None, None, None]

    traj = teacher_trajectory(velocity, noise, ode_time_grid(6, 5.0, TIMES), TIMES)
    assert traj.shape == (1, 5, 3, 2, 2, 2)
    for i, t in enumerate((*TIMES, 0.0)):
        torch.testing.assert_close(traj[:, i], noisy_sample(c, noise, t), atol=1e-5, rtol=1e-5)


def test_writes_resumable_shards(setup, tmp_path, monkeypatch):
    latents, teacher, out = setup
    index = json.loads((out / "index.json").read_text())
    assert index["times"] == [*TIMES, 0.0] and len(index["shards"]) == 2
    data = OdeDataset(out)
    assert len(data) == 4 and data.num_latent_frames == 4
    clip = data[0]
    assert clip.trajectory.shape == (1, 5, 4, 16, 4, 4) and clip.actions.shape == (1, 13, 13)
    assert torch.isfinite(clip.trajectory).all() and clip.caption[0]
    # a third shard: the first two are listed and not generated again
    calls = []
    real = ode_module.teacher_trajectory
    monkeypatch.setattr(ode_module, "teacher_trajectory", lambda *a: calls.append(1) or real(*a))
    copy = tmp_path / "ode"
    shutil.copytree(out, copy)
    train("ode", CONFIG, ode_args(tmp_path / "run", teacher, latents, copy, "trainer.max_steps=3"))
    assert len(calls) == 1 and len(OdeDataset(copy)) == 6
    # a resumed (same) run starts after its checkpoint
    result = train(
        "ode",
        CONFIG,
        ode_args(tmp_path / "run", teacher, latents, copy, "trainer.max_steps=4"),
        resume=True,
    )
    assert result.step == 4 and len(calls) == 2


def test_bad_inputs_are_clear_errors(setup, tmp_path):
    latents, teacher, _ = setup
    moved = tmp_path / "latents64"
    shutil.copytree(latents, moved)
    index = json.loads((moved / "index.json").read_text())
    index["settings"]["resolution"] = [64, 64]
    (moved / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="64x64 videos, data.resolution is 32"):
        train("ode", CONFIG, ode_args(tmp_path / "a", teacher, moved, tmp_path / "o1"))
    ode_run = setup[2].parent / "ode_run"  # a checkpoint, but of the ode stage
    with pytest.raises(ValueError, match="of stage 'ode', not 'teacher'"):
        train("ode", CONFIG, ode_args(tmp_path / "b", ode_run, latents, tmp_path / "o2"))
    with pytest.raises(ValueError, match="other settings.*guidance_scale"):
        args = ode_args(tmp_path / "c", teacher, latents, setup[2], "ode.guidance_scale=2.0")
        train("ode", CONFIG, args)
