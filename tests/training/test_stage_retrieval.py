"""The ``retrieval`` stage with a small embedder (CPU, seconds): the losses and the Window
Temporal Delta loss fall on fixed sequences, diagnostics, exact resume, the trained embedder in
the retrieval policy, checks before training, and the synthetic clips."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_testing import losses, weights

from reverie.memory import RetrievalEmbedderConfig, get_policy
from reverie.training import load_experiment, train
from reverie.training.common import stage_weights
from reverie.training.distributed import DistContext
from reverie.training.frame_clips import FrameClipsConfig, SmoothLatentClips
from reverie.training.seeding import seed_everything
from reverie.training.stages.retrieval import (
    EmbeddingDecoder,
    RetrievalStage,
    retrieval_embedder_from_run,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "retrieval.yaml"
SMALL = [
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.device=cpu",
    "model.embedder={in_channels: 4, channels: [8, 16], dim: 32, groups: 4}",
    "data.latent_size=[8, 8]",
    "data.num_samples=8",
    "data.batch_size=4",
    "optim.lr=3e-3",
]


def run_retrieval(run_dir: Path, *overrides: str, resume: bool = False):
    args = [f"trainer.run_dir={run_dir}", *SMALL, *overrides]
    return train("retrieval", CONFIG, args, resume=resume)


def test_losses_and_wtd_decrease_on_fixed_sequences(tmp_path):
    _, config = load_experiment("retrieval", CONFIG, [f"trainer.run_dir={tmp_path}", *SMALL])
    seed_everything(0)
    stage = RetrievalStage(config, DistContext())
    batch = next(stage.batches(0))
    assert batch.shape == (4, 8, 4, 8, 8)  # 8 consecutive latent frames per sequence
    optimizer, curve = stage.optimizers()["embedder"], []
    for _ in range(40):
        optimizer.zero_grad(set_to_none=True)
        out = stage.forward_backward("embedder", batch, contextlib.nullcontext, 1.0)
        optimizer.step()
        curve.append({k: float(v.detach()) for k, v in out.items()})
    first, last = curve[0], curve[-1]
    assert all(math.isfinite(v) for row in curve for v in row.values())
    assert first["delta"] > 0.01  # neighbours start trivially similar (cos > m = 0.85)
    assert last["delta"] < 0.8 * first["delta"], (first, last)  # plateaus: smoothness competes
    assert last["loss"] < first["loss"] and last["reconstruction"] < first["reconstruction"]
    assert last["cos_k1"] < first["cos_k1"]
    assert {f"cos_k{k}" for k in range(1, 6)} | {"cos_far", "cos_other"} <= set(last)


def test_smoke_exact_resume_and_the_policy_loads_the_embedder(tmp_path):
    full = tmp_path / "full"
    result = run_retrieval(full, "trainer.max_steps=4")
    assert result.step == 4 and math.isfinite(result.metrics["embedder/loss"])
    staged = tmp_path / "staged"
    run_retrieval(staged, "trainer.max_steps=2")
    run_retrieval(staged, "trainer.max_steps=4", resume=True)
    assert losses(staged, "embedder/loss") == losses(full, "embedder/loss")
    for name in ("embedder", "decoder"):
        a, b = weights(full, 4, name), weights(staged, 4, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name

    embedder = retrieval_embedder_from_run(full)  # the run's newest checkpoint
    saved = weights(full, 4, "embedder")
    assert all(torch.equal(embedder.state_dict()[k], saved[k]) for k in saved)
    file = full / "checkpoints" / "step_00000004" / "embedder.safetensors"
    assert retrieval_embedder_from_run(file).state_dict().keys() == saved.keys()
    policy = get_policy("retrieval", embed=embedder)
    e = policy.embed(torch.randn(3, 4, 8, 8))
    assert e.shape == (3, 32) and not e.requires_grad
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    exported, options = RetrievalStage.export_component(full)  # `reverie.training.export`
    assert RetrievalStage.component == "retrieval_embedder" and options == {}
    assert all(torch.equal(exported.state_dict()[k], saved[k]) for k in saved)

    with pytest.raises(ValueError, match="'retrieval' checkpoint, not 'mag'"):
        stage_weights(full, "mag", "embedder")
    with pytest.raises(FileNotFoundError, match="no retrieval checkpoint"):
        retrieval_embedder_from_run(tmp_path / "nothing")


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="sequence_frames"):
        run_retrieval(tmp_path / "a", "loss.sequence_frames=3")
    with pytest.raises(FileNotFoundError, match="data.latents"):
        run_retrieval(tmp_path / "b", f"data.latents={tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="loss.wtd_window"):
        run_retrieval(tmp_path / "c", "loss.wtd_window=3")
    with pytest.raises(ValueError, match="groups"):
        run_retrieval(tmp_path / "d", "model.embedder.groups=3")
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_decoder_restores_any_latent_size():
    cfg = RetrievalEmbedderConfig(in_channels=4, channels=(8, 16, 16), dim=32, groups=4)
    decoder = EmbeddingDecoder(cfg, (7, 13))
    assert decoder.grid == (16, 1, 2)
    assert decoder(torch.randn(5, 32)).shape == (5, 4, 7, 13)


def test_synthetic_clips_are_deterministic_and_change_slowly():
    clips = SmoothLatentClips(FrameClipsConfig(num_samples=4), 16, channels=4, seed=7)
    x = clips[2]
    assert x.shape == (16, 4, 8, 8) and torch.equal(x, clips[2])
    assert not torch.equal(x, clips[1])
    assert abs(float(x.std()) - 1.0) < 0.2
    cos = F.cosine_similarity(x.flatten(1)[None], x.flatten(1)[:, None], dim=-1)  # (T, T)
    assert float(cos.diagonal(1).mean()) > 0.9  # neighbours alike ...
    assert float(cos.diagonal(1).mean()) > float(cos.diagonal(12).mean())  # ... distant frames less
