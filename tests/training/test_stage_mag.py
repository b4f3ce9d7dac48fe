"""The ``mag`` stage on a very small backbone (CPU, fp32, seconds): the compressed cache is the
block's last frame and carries the whole block, the loss falls on a fixed batch, exact resume
with eval rows, reconstruction metrics, checks before training, loading the memory model."""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import types
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from training_testing import losses, weights

from reverie.memory import MagPolicy, get_policy
from reverie.models import WanDiT
from reverie.text import EMPTY_PROMPT
from reverie.training import load_experiment, read_metrics, train
from reverie.training.distributed import DistContext
from reverie.training.seeding import seed_everything
from reverie.training.stages import mag as mag_module
from reverie.training.stages.mag import (
    MagModelConfig,
    MagStage,
    compress_block,
    memory_model_from_run,
    psnr,
    reconstruction_quality,
    ssim,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "mag.yaml"
TEXT_DIM = 32
BACKBONE = "dim: 32, ffn_dim: 64, num_heads: 2, num_layers: 2, in_channels: 4, out_channels: 4"
SMALL = [
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.device=cpu",
    f"model.overrides={{{BACKBONE}, text_dim: {TEXT_DIM}}}",
    "model.frames_per_block=2",
    "data.latent_size=[4, 4]",
    "data.num_samples=8",
    "data.batch_size=2",
    "memory.max_start_frame=12",
    "eval.every=0",
    "eval.num_clips=1",
    "eval.clip_frames=5",
    "optim.lr=1e-3",
]


@dataclass
class FakeTextEncoder:
    """Deterministic random token states per prompt (no MiniLM load)."""

    dim: int = TEXT_DIM
    max_length: int = 4

    def encode(self, prompts):
        states = [
            torch.randn(self.max_length, self.dim, generator=torch.Generator().manual_seed(
                zlib.crc32(p.encode())))
            for p in prompts
        ]  # fmt: skip
        return torch.stack(states), torch.ones(len(prompts), self.max_length, dtype=torch.bool)

    def encode_empty(self, batch_size):
        return self.encode([EMPTY_PROMPT] * batch_size)


@pytest.fixture(autouse=True)
def fake_text(monkeypatch):
    monkeypatch.setattr(mag_module, "get_text_encoder", lambda name, **kw: FakeTextEncoder())


def run_mag(run_dir: Path, *overrides: str, resume: bool = False):
    return train("mag", CONFIG, [f"trainer.run_dir={run_dir}", *SMALL, *overrides], resume=resume)


def small_model(frames_per_block: int = 2) -> WanDiT:
    seed_everything(0)
    cfg = load_experiment("mag", CONFIG, ["trainer.run_dir=x", *SMALL])[1].model
    return WanDiT(MagModelConfig(cfg.preset, cfg.overrides, frames_per_block).backbone())


def empty(batch: int = 1) -> torch.Tensor:
    return FakeTextEncoder().encode_empty(batch)[0]


def test_compressed_cache_is_the_last_frame_and_carries_the_block():
    model = small_model(3)
    block = torch.randn(2, 3, 4, 4, 4)
    cache = compress_block(model, block, empty(2), frame_offset=6)
    assert cache.frame_indices == [8] and cache.num_tokens == 4  # one 2x2-token frame
    assert torch.equal(cache.positions[:, 0], torch.full((4,), 8.0))

    # Same as writing directly at the RoPE start (the write pass is shift-invariant).
    direct = model.new_cache()
    t0 = torch.zeros(2)
    model(block, t0, empty(2), cache=direct, write_cache=True, frame_offset=6)
    MagPolicy(writer=model).after_write(direct, block)
    x_t, t = torch.randn_like(block), torch.full((2,), 0.9)
    out = model(x_t, t, empty(2), cache=cache, frame_offset=6)
    ref = model(x_t, t, empty(2), cache=direct, frame_offset=6)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)

    # The first frame reaches the decoder only through the kept last frame's K/V, with grad.
    with torch.no_grad():
        model.head.head.weight.normal_()  # the zero-init head would hide everything
    block = block.clone().requires_grad_(True)
    cache = compress_block(model, block, empty(2))
    model(x_t, t, empty(2), cache=cache, frame_offset=0).square().sum().backward()
    assert block.grad[:, 0].abs().sum() > 0  # frame 0 -> last frame's K/V -> decoder


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    _, config = load_experiment("mag", CONFIG, [f"trainer.run_dir={tmp_path}", *SMALL])
    seed_everything(0)
    stage = MagStage(config, DistContext())
    batch = next(stage.batches(0))
    assert batch.shape == (2, 4, 4, 4, 4)  # 2 blocks of b = 2 per clip (blocks_per_clip)
    optimizer, curve = stage.optimizers()["memory"], []
    for _ in range(15):  # same batch, noise, times and RoPE starts every step
        torch.manual_seed(0)
        optimizer.zero_grad(set_to_none=True)
        out = stage.forward_backward("memory", batch, contextlib.nullcontext, 1.0)
        optimizer.step()
        curve.append(float(out["loss"].detach()))
    assert all(math.isfinite(v) for v in curve)
    assert all(b < a for a, b in zip(curve, curve[1:], strict=False)), curve
    assert curve[-1] < 0.8 * curve[0], curve


def test_smoke_eval_rows_and_exact_resume(tmp_path):
    args = ["trainer.max_steps=4", "eval.every=2", "eval.block_sizes=[1, 2]"]
    full = tmp_path / "full"
    result = run_mag(full, *args)
    assert result.step == 4 and math.isfinite(result.metrics["memory/loss"])
    evals = [r for r in read_metrics(full) if "eval/b1/psnr" in r]
    assert [r["step"] for r in evals] == [0, 2]
    for row in evals:
        assert all(math.isfinite(row[f"eval/b{b}/{k}"]) for b in (1, 2) for k in ("psnr", "ssim"))

    staged = tmp_path / "staged"
    run_mag(staged, *args[1:], "trainer.max_steps=2")
    run_mag(staged, *args, resume=True)
    assert losses(staged, "memory/loss") == losses(full, "memory/loss")
    assert [r for r in read_metrics(staged) if "eval/b1/psnr" in r] == evals  # no duplicate
    a, b = weights(full, 4, "memory"), weights(staged, 4, "memory")
    assert all(torch.equal(a[k], b[k]) for k in a)

    shutil.rmtree(full / "checkpoints" / "step_00000004")  # crashed after evaluating step 2
    run_mag(full, *args, "trainer.checkpoint_every=2", resume=True)
    assert [r for r in read_metrics(full) if "eval/b1/psnr" in r] == evals
    assert all(torch.equal(a[k], weights(full, 4, "memory")[k]) for k in a)

    model = memory_model_from_run(full)  # what the mag policy writes with
    assert all(torch.equal(model.state_dict()[k], a[k]) for k in a)
    assert not any(p.requires_grad for p in model.parameters())
    assert get_policy("mag", writer=model).write_spec.model is model
    exported, options = MagStage.export_component(full)  # what `reverie.training.export` packs
    assert all(torch.equal(exported.state_dict()[k], a[k]) for k in a)
    assert MagStage.component == "memory_model" and options == {"mag": {"block_frames": 2}}


def test_reconstruction_quality_at_every_block_size():
    model = small_model()
    latents = torch.randn(2, 5, 4, 4, 4)
    for b in range(1, 6):
        q = reconstruction_quality(model, latents, b, empty_context=empty())
        assert all(math.isfinite(q[k]) for k in ("psnr", "ssim", "mse")), (b, q)
        assert -1.0 <= q["ssim"] <= 1.0
        assert (q["psnr_last_frame"] == math.inf) == (b == 1)

    def decode(z):  # latents -> "pixels" (B, T, 3, 2h, 2w) in [-1, 1]
        return torch.tanh(z[:, :, :3]).repeat_interleave(2, -1).repeat_interleave(2, -2)

    q = reconstruction_quality(model, latents, 3, decode, empty_context=empty())
    assert math.isfinite(q["psnr"]) and math.isfinite(q["ssim"])
    with pytest.raises(ValueError, match="T >= 6"):
        reconstruction_quality(model, latents, 6, empty_context=empty())


def test_psnr_and_ssim():
    x = torch.randn(2, 3, 4, 16, 16)
    assert torch.isinf(psnr(x, x, 2.0)).all()
    torch.testing.assert_close(ssim(x, x, 2.0), torch.ones(2))
    noisy = x + 0.1 * torch.randn_like(x)
    assert (psnr(noisy, x, 2.0) > 20).all() and (ssim(noisy, x, 2.0) < 1).all()
    torch.testing.assert_close(psnr(x + 0.1, x, 2.0), torch.full((2,), 10 * math.log10(400.0)))
    metrics = pytest.importorskip("skimage.metrics")
    a, b = torch.rand(1, 1, 3, 32, 32), torch.rand(1, 1, 3, 32, 32)
    ref = metrics.structural_similarity(
        a[0, 0].numpy(), b[0, 0].numpy(), data_range=1.0, channel_axis=0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )  # fmt: skip
    assert abs(float(ssim(a, b, 1.0)) - ref) < 1e-4


def test_latent_clip_data(tmp_path, monkeypatch):
    """``data.latents`` reads ``LatentClipDataset`` clips of ``b * blocks_per_clip`` frames."""
    seen = {}

    class FakeLatentClips:
        latent_shape = (4, 4, 4)

        def __init__(self, root, clip_latent_frames, palindrome=0.0):
            seen.setdefault("frames", []).append(clip_latent_frames)

        def __len__(self):
            return 4

        def __getitem__(self, index):
            frames = seen["frames"][-1]
            return types.SimpleNamespace(latents=torch.randn(1, frames, 4, 4, 4))

    module = types.ModuleType("reverie.training.latents")
    module.LatentClipDataset = FakeLatentClips
    monkeypatch.setitem(sys.modules, "reverie.training.latents", module)
    result = run_mag(
        tmp_path / "run", "trainer.max_steps=1", f"data.latents={tmp_path}",
        "memory.start_per_sample=false",
    )  # fmt: skip
    assert seen["frames"] == [4] and math.isfinite(result.metrics["memory/loss"])


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="max_start_frame"):
        run_mag(tmp_path / "a", "memory.max_start_frame=1")
    with pytest.raises(FileNotFoundError, match="model.init"):
        run_mag(tmp_path / "b", f"model.init={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="block_sizes"):
        run_mag(tmp_path / "c", "eval.block_sizes=[6]")
    with pytest.raises(ValueError, match="model.preset"):
        run_mag(tmp_path / "d", "model.preset=huge")
    with pytest.raises(FileNotFoundError, match="data.latents"):
        run_mag(tmp_path / "e", f"data.latents={tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="text_dim"):
        run_mag(tmp_path / "f", f"model.overrides={{{BACKBONE}, text_dim: 16}}")
    assert not any((tmp_path / n / "metrics.jsonl").exists() for n in "abcdef")
