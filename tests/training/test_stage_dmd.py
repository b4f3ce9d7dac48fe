"""The ``dmd`` stage on a very small backbone (CPU, fp32, seconds): finite losses, the 5:1
critic:generator schedule, the rollout curriculum, a learning critic, exact resume."""

from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from training_testing import losses, weights

from reverie.models import AttentionMode, WanDiT, save_checkpoint
from reverie.text import EMPTY_PROMPT
from reverie.training import load_experiment, read_metrics, train
from reverie.training.distributed import DistContext
from reverie.training.latents import ShardStore
from reverie.training.seeding import seed_everything
from reverie.training.stages import dmd as dmd_module
from reverie.training.stages.dmd import DMDStage, RolloutConfig

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "dmd.yaml"
TEXT_DIM = 32
SMALL = [
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.device=cpu",
    "model.overrides={dim: 32, ffn_dim: 64, num_heads: 2, num_layers: 2, text_dim: 32, "
    "in_channels: 4, out_channels: 4}",
    "data.latent_size=[4, 4]",
    "data.num_samples=8",
    "rollout.min_blocks=2",
    "rollout.max_blocks=3",
    "rollout.ramp_steps=4",
    "generator_optim.lr=1e-3",
    "critic_optim.lr=1e-3",
]


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


@pytest.fixture(autouse=True)
def fake_text(monkeypatch):
    monkeypatch.setattr(dmd_module, "build_text_encoder", lambda config, dim: FakeTextEncoder())


def run_dmd(run_dir: Path, *overrides: str, resume: bool = False):
    return train("dmd", CONFIG, [f"trainer.run_dir={run_dir}", *SMALL, *overrides], resume=resume)


def _generator_state(stage: DMDStage) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in stage.generator.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_smoke_schedule_curriculum_and_resume(tmp_path, monkeypatch):
    snapshots: dict[int, list[torch.Tensor]] = {}
    original = DMDStage.updates

    def spy(self, step):
        snapshots[step] = _generator_state(self)  # weights at the start of each step
        return original(self, step)

    monkeypatch.setattr(DMDStage, "updates", spy)
    full = tmp_path / "full"
    result = run_dmd(full, "trainer.max_steps=6", "trainer.ema_modules=[generator]")
    monkeypatch.setattr(DMDStage, "updates", original)

    rows = read_metrics(full)
    assert [r["step"] for r in rows if "generator/loss" in r] == [1, 6]  # steps 0 and 5
    assert all(math.isfinite(r[k]) for r in rows for k in r if k.endswith("loss"))
    assert [r["critic/rollout_frames"] for r in rows] == [2, 2, 2, 2, 3, 3]  # 2 -> 3 blocks
    snapshots[6] = weights(full, 6, "generator")
    changed = [not _same(snapshots[s], snapshots[s + 1]) for s in range(6)]
    assert changed == [True, False, False, False, False, True]
    assert result.step == 6

    staged = tmp_path / "staged"
    run_dmd(staged, "trainer.max_steps=3", "trainer.ema_modules=[generator]")
    run_dmd(staged, "trainer.max_steps=6", "trainer.ema_modules=[generator]", resume=True)
    assert losses(staged, "critic/loss") == losses(full, "critic/loss")
    for name in ("generator", "critic", "generator.ema"):
        assert _same(weights(full, 6, name), weights(staged, 6, name)), name


def test_critic_flow_matching_loss_decreases_on_a_fixed_batch(tmp_path):
    _, config = load_experiment("dmd", CONFIG, [f"trainer.run_dir={tmp_path}", *SMALL])
    seed_everything(0)
    stage = DMDStage(config, DistContext())
    batch = next(stage.batches(0))
    generator_before = _generator_state(stage)
    optimizer, curve = stage.optimizers()["critic"], []
    for _ in range(6):  # critic-only steps on the same batch, rollout, noise and time
        torch.manual_seed(0)
        optimizer.zero_grad(set_to_none=True)
        out = stage.forward_backward("critic", batch, contextlib.nullcontext, 1.0)
        optimizer.step()
        curve.append(float(out["loss"].detach()))
    assert all(math.isfinite(v) for v in curve)
    assert all(b < a for a, b in zip(curve, curve[1:], strict=False)), curve
    assert curve[-1] < 0.9 * curve[0], curve
    assert _same(generator_before, _generator_state(stage))


@pytest.mark.parametrize(
    "overrides",
    [
        ["dmd.backprop=naive"],
        ["frames_per_block=2", "memory.policy=window", "memory.options={window_frames: 2}"],
    ],
)
def test_variants_train(tmp_path, overrides):
    result = run_dmd(tmp_path / "run", "trainer.max_steps=1", *overrides)
    assert math.isfinite(result.metrics["generator/loss"])
    assert math.isfinite(result.metrics["critic/loss"])


def write_latents(root: Path, windows: int = 2, frames: int = 4) -> Path:
    """A tiny ``reverie encode`` directory: ``windows`` windows of ``frames`` 4x4x4 latents."""
    video = 1 + 4 * (frames - 1)
    settings = {"resolution": [32, 32], "latent_shape": [4, 4, 4], "clip_frames": video}
    store = ShardStore(root, "latents", settings, num_shards=1)
    tensors, items = {}, []
    for i in range(windows):
        key = f"{i:08d}"
        tensors[f"{key}/latents"] = torch.randn(frames, 4, 4, 4)
        tensors[f"{key}/actions"] = torch.rand(video, 13)
        tensors[f"{key}/R"] = torch.eye(3).expand(video, 3, 3).contiguous()
        tensors[f"{key}/P"] = torch.randn(video, 3).cumsum(0)
        meta = {"caption": f"world {i}", "episode": f"ep{i}", "action_scale": 0.1}
        items.append({"key": key, "latent_frames": frames, **meta})
    store.write(0, tensors, items)
    store.update(latent_mean=[0.0] * 4, latent_std=[1.0] * 4)
    return root


def test_latent_clip_conditioning(tmp_path, monkeypatch):
    """``data.latents``: clips of the longest rollout; the first frame conditions the student."""
    latents = write_latents(tmp_path / "latents")
    prefixes = []
    original = DMDStage.prepare

    def spy(self, clip):
        prefixes.append(clip.latents.shape)
        return original(self, clip)

    monkeypatch.setattr(DMDStage, "prepare", spy)
    data = [f"data.latents={latents}", "data.resolution=32"]
    result = run_dmd(tmp_path / "run", "trainer.max_steps=1", *data)
    assert math.isfinite(result.metrics["generator/loss"])
    assert prefixes[0] == (1, 3, 4, 4, 4)  # clips of max_blocks * frames_per_block frames
    with pytest.raises(ValueError, match="clip_latent_frames=5"):
        run_dmd(tmp_path / "long", "rollout.max_blocks=5", *data)


def test_weights_come_from_the_teacher_and_the_student(tmp_path):
    _, config = load_experiment("dmd", CONFIG, [f"trainer.run_dir={tmp_path / 'r'}", *SMALL])
    teacher = WanDiT(config.backbone(AttentionMode.BIDIRECTIONAL))
    student = WanDiT(config.backbone(AttentionMode.BLOCK_CAUSAL))
    for model in (teacher, student):
        torch.nn.init.normal_(model.head.head.weight)
    save_checkpoint(teacher, tmp_path / "teacher")  # a save_checkpoint directory
    save_file(student.state_dict(), str(tmp_path / "student.safetensors"))  # a weights file
    paths = [f"teacher={tmp_path / 'teacher'}", f"student={tmp_path / 'student.safetensors'}"]
    _, config = load_experiment(
        "dmd", CONFIG, [f"trainer.run_dir={tmp_path / 'r'}", *SMALL, *paths]
    )
    stage = DMDStage(config, DistContext())
    assert _same(stage.teacher.state_dict(), teacher.state_dict())
    assert _same(stage.critic.state_dict(), teacher.state_dict())  # the critic starts as teacher
    assert _same(stage.generator.state_dict(), student.state_dict())
    assert not any(p.requires_grad for p in stage.teacher.parameters())


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="memory.policy"):
        run_dmd(tmp_path / "a", "memory.policy=nope")
    with pytest.raises(FileNotFoundError, match="teacher: no weights"):
        run_dmd(tmp_path / "b", f"teacher={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="min_blocks"):
        run_dmd(tmp_path / "c", "rollout.min_blocks=1")
    assert not (tmp_path / "a").exists() or not (tmp_path / "a" / "metrics.jsonl").exists()


def test_rollout_curriculum():
    assert [RolloutConfig(2, 6, 8).blocks_at(s) for s in (0, 1, 2, 4, 8, 100)] == [2, 2, 3, 4, 6, 6]
    assert RolloutConfig(2, 6, 0).blocks_at(0) == 6
    with pytest.raises(ValueError, match="min_blocks"):
        RolloutConfig(5, 4)
