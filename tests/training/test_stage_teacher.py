"""The ``teacher`` stage on a very small backbone and encoded 32x32 clips (CPU, seconds): the
flow-matching loss falls on a fixed batch, text dropout, resume, bad inputs. Also holds the
helpers the ``ode``/``student`` tests share (a fake text encoder, a trained teacher run)."""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from test_encode import make_latents

from reverie.models import WanDiT, get_preset, save_checkpoint
from reverie.text import EMPTY_PROMPT
from reverie.training import common as common_module
from reverie.training import load_experiment, read_metrics, train
from reverie.training.common import load_teacher
from reverie.training.distributed import DistContext
from reverie.training.seeding import seed_everything
from reverie.training.stages import teacher as teacher_module
from reverie.training.stages.teacher import TeacherStage

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
TEXT_DIM = 32
BACKBONE = "{dim: 32, ffn_dim: 64, num_heads: 2, num_layers: 2, text_dim: 32}"


@dataclass
class FakeTextEncoder:
    """Deterministic random token states per prompt (no MiniLM load)."""

    dim: int = TEXT_DIM
    max_length: int = 4

    def encode(self, prompts):
        states = [
            torch.randn(
                self.max_length,
                self.dim,
                generator=torch.Generator().manual_seed(zlib.crc32(p.encode())),
            )
            for p in prompts
        ]
        return torch.stack(states), torch.ones(len(prompts), self.max_length, dtype=torch.bool)

    def encode_empty(self, batch_size):
        return self.encode([EMPTY_PROMPT] * batch_size)


@contextlib.contextmanager
def fake_text_encoder():
    """Every stage builds its text encoder through ``common.get_text_encoder``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common_module, "get_text_encoder", lambda name, **kw: FakeTextEncoder())
        yield


def teacher_args(run_dir: Path, latents: Path, *extra: str) -> list[str]:
    return [
        f"trainer.run_dir={run_dir}",
        f"data.latents={latents}",
        "data.resolution=32",
        "data.clip_latent_frames=4",
        "data.batch_size=2",
        f"model.overrides={BACKBONE}",
        "trainer.progress=false",
        "trainer.log_every=1",
        "trainer.device=cpu",
        *extra,
    ]


def train_teacher(run_dir: Path, latents: Path, *extra: str, resume: bool = False):
    with fake_text_encoder():
        args = teacher_args(run_dir, latents, *extra)
        return train("teacher", CONFIGS / "teacher.yaml", args, resume=resume)


@pytest.fixture(autouse=True)
def fake_text():
    with fake_text_encoder():
        yield


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> Path:
    return make_latents(tmp_path_factory.mktemp("teacher"))


def test_flow_matching_loss_falls_on_a_fixed_batch(latents, tmp_path):
    args = teacher_args(tmp_path, latents, "optim.lr=3e-3", "optim.warmup_steps=0")
    _, config = load_experiment("teacher", CONFIGS / "teacher.yaml", args)
    seed_everything(0)
    stage = TeacherStage(config, DistContext())
    batch = next(stage.batches(0))
    assert batch.latents.shape == (2, 4, 16, 4, 4) and batch.actions.shape == (2, 13, 13)

    def measure() -> torch.Tensor:
        torch.manual_seed(0)  # the same noise, times and text dropout each time
        return stage.loss("teacher", batch)["loss"]

    first = measure()
    for _ in range(10):
        stage.optimizers()["teacher"].zero_grad(set_to_none=True)
        measure().backward()
        stage.optimizers()["teacher"].step()
    assert measure() < 0.7 * first


def test_text_dropout_replaces_captions_by_the_empty_prompt(latents, tmp_path, monkeypatch):
    args = teacher_args(tmp_path, latents, "text.dropout=1.0")
    _, config = load_experiment("teacher", CONFIGS / "teacher.yaml", args)
    stage = TeacherStage(config, DistContext())
    seen = []
    monkeypatch.setattr(
        teacher_module,
        "encode_text",
        lambda enc, caps, dev: seen.append(caps) or enc.encode(caps)[0],
    )
    stage.loss("teacher", next(stage.batches(0)))
    assert seen == [[EMPTY_PROMPT, EMPTY_PROMPT]]


def test_resume_and_load_teacher(latents, tmp_path):
    train_teacher(tmp_path, latents, "trainer.max_steps=1", "trainer.ema_modules=[teacher]")
    result = train_teacher(tmp_path, latents, "trainer.max_steps=2", resume=True)
    assert result.step == 2 and [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    model, config = load_teacher(tmp_path)
    assert model.config.num_layers == 2 and config.data.clip_latent_frames == 4


def test_bad_inputs_are_clear_errors(latents, tmp_path):
    with pytest.raises(ValueError, match="32x32 videos, data.resolution is 64"):
        train_teacher(tmp_path / "a", latents, "data.resolution=64")
    with pytest.raises(ValueError, match="clip_latent_frames=9 > the 5 latent frames"):
        train_teacher(tmp_path / "b", latents, "data.clip_latent_frames=9")
    other = save_checkpoint(WanDiT(get_preset("tiny", num_layers=1)), tmp_path / "other")
    with pytest.raises(ValueError, match="another backbone.*dim: 256 there, 32 here"):
        train_teacher(tmp_path / "c", latents, f"model.init={other}")
