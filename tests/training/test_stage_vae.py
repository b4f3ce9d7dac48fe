"""The ``vae`` stage on 32x32 synthetic clips (CPU, seconds): the loss falls on a fixed batch,
the training forward is the tokenizer's encode, resume works, bad datasets are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_encode import write_dataset

from reverie.training import load_experiment, read_metrics, train
from reverie.training.distributed import DistContext
from reverie.training.encode import load_trained_vae
from reverie.training.seeding import seed_everything
from reverie.training.stages.vae import VAEStage

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "vae.yaml"


def small(run_dir: Path, data: Path, *extra: str) -> list[str]:
    return [
        f"trainer.run_dir={run_dir}",
        f"data.dataset={data}",
        "data.resolution=32",
        "data.clip_frames=5",
        "trainer.progress=false",
        "trainer.log_every=1",
        "trainer.device=cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("vae_data"), episodes=2, frames=9)


def test_loss_falls_on_a_fixed_batch_and_forward_matches_encode(data, tmp_path):
    _, config = load_experiment("vae", CONFIG, small(tmp_path, data, "optim.warmup_steps=0"))
    seed_everything(0)
    stage = VAEStage(config, DistContext())
    batch = next(stage.batches(0))
    assert batch.frames.shape == (2, 5, 3, 32, 32)

    def measure() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the same posterior sample each time
        return stage.loss("vae", batch)

    first = measure()
    for _ in range(8):
        stage.optimizers()["vae"].zero_grad(set_to_none=True)
        measure()["loss"].backward()
        stage.optimizers()["vae"].step()
    last = measure()
    assert last["loss"] < 0.9 * first["loss"] and last["psnr"] > first["psnr"]
    # the training forward's posterior mean is what the tokenizer encodes
    from reverie.tokenizer import VideoVAE

    vae = VideoVAE(stage.vae.config)
    vae.load_state_dict(stage.vae.state_dict())
    with torch.no_grad():
        _, mean, _ = stage.vae(batch.frames, sample=False)
        torch.testing.assert_close(mean, vae.encode(batch.frames), atol=1e-5, rtol=1e-4)


def test_resume_and_encode_loads_the_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    train("vae", CONFIG, small(run, data, "trainer.max_steps=1"))
    result = train("vae", CONFIG, small(run, data, "trainer.max_steps=2"), resume=True)
    assert result.step == 2
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and all("vae/psnr" in r for r in rows)
    loaded = load_trained_vae(run)
    assert loaded.resolution == 32 and loaded.source.parent.name == "step_00000002"


def test_refuses_a_dataset_of_another_resolution_or_clip_length(data, tmp_path):
    with pytest.raises(ValueError, match="32x32 but 64x64 was expected"):
        train("vae", CONFIG, small(tmp_path, data, "data.resolution=64"))
    with pytest.raises(ValueError, match="clip_frames must be 1 \\+ 4k"):
        train("vae", CONFIG, small(tmp_path, data, "data.clip_frames=6"))
    with pytest.raises(ValueError, match="shorter than clip_frames=13"):
        train("vae", CONFIG, small(tmp_path, data, "data.clip_frames=13"))


def test_single_frame_clips(data, tmp_path):
    """`data.clip_frames=1` (image batches): the forward is the first chunk alone."""
    _, config = load_experiment("vae", CONFIG, small(tmp_path, data, "data.clip_frames=1"))
    seed_everything(0)
    stage = VAEStage(config, DistContext())
    batch = next(stage.batches(0))
    assert batch.frames.shape[1] == 1
    out = stage.loss("vae", batch)
    assert torch.isfinite(out["loss"])
    with torch.no_grad():
        recon, mean, _ = stage.vae(batch.frames, sample=False)
    assert recon.shape == batch.frames.shape and mean.shape[1] == 1
