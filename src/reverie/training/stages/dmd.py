"""``dmd``: Self-Forcing distribution matching distillation of the block-causal few-step student
(Self Forcing arXiv 2506.08009; DMD arXiv 2311.18828 eq. 7; RELIC arXiv 2512.04040 §4.4.2).

    reverie train dmd --config configs/tiny/dmd.yaml teacher=runs/tiny/teacher \
        student=runs/tiny/student data.latents=data/tiny-latents
    reverie train dmd --config configs/tiny/dmd.yaml trainer.max_steps=20    # smoke run

The **generator** (block-causal `WanDiT`) rolls out autoregressively from noise with its KV cache
and memory policy (``memory``), conditioned on a clean first latent frame, actions, poses and
text (the empty prompt with probability ``text.dropout``, MAG arXiv 2512.18741 §3.2). The frozen
**teacher** (bidirectional) is the real score, with CFG ``dmd.guidance_scale`` against the empty
prompt; the **critic** (the teacher's architecture and initial weights) is the fake score,
trained by flow matching on generator samples. The critic updates every step, the generator
every ``dmd.critic_per_generator``-th (Self Forcing's 5:1).

Generator update: ``x_u = Ψ(x̂, u)``, ``g = dmd_gradient(x̂, real_x0, fake_x0)``, back-propagated
block by block (``dmd.backprop: replay``, RELIC §4.4.2, `reverie.training.replay`) or through one
graph (``naive``). ``u`` (and the critic's ``t``) is Self Forcing's: ``U(0.02, 0.98)`` then Wan's
shift 5, ``5 t / (1 + 4 t)``, i.e. ``u ∈ [0.093, 0.996]`` weighted towards high noise
(``dmd.dmd_time``, ``dmd.critic_time``). Teacher and critic score the whole sequence; the given
first frame is diffused to ``u`` with the rest (``dmd.prefix_time: noised``, as our teacher was
trained with one time per clip) or kept clean at ``t = 0`` (``clean``, for teachers trained with a
clean first frame). One exit step per rollout, uniform over the student's steps. The rollout
grows from ``rollout.min_blocks`` to ``rollout.max_blocks`` blocks over ``rollout.ramp_steps``.

Weights: ``teacher``/``student`` are a ``teacher``/``student`` run or checkpoint directory (EMA
weights when present), a ``reverie.models.save_checkpoint`` directory or a ``.safetensors`` file;
the generator starts from the student, else from the teacher; with no paths all three start from
one random teacher (smoke runs). The teacher is not checkpointed: resume rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from reverie.diffusion import (
    FewStepSchedule,
    TimeDistribution,
    TimeSamplingConfig,
    classifier_free_guidance,
    noisy_sample,
    sample_training_time,
    velocity_target,
    x0_from_velocity,
)
from reverie.memory import get_policy
from reverie.models import AttentionConfig, AttentionMode, WanDiT, WanDiTConfig
from reverie.models.state_dicts import NEW_MODULE_PREFIXES, load_state_dict_checked
from reverie.objectives import flow_matching_loss
from reverie.text import empty_text_dropout
from reverie.training.common import (
    DiTModelConfig,
    LatentClipsConfig,
    TextConfig,
    build_text_encoder,
    check_latents,
    check_same_backbone,
    encode_text,
    resolve_weights,
)
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.distributed import DistContext
from reverie.training.latents import LatentClip
from reverie.training.replay import ARStudent, Conditioning, naive_dmd_loss, replayed_dmd_backward
from reverie.training.stage import Stage, register_stage

# Self Forcing's DMD / critic time: U(0.02, 0.98), then Wan's shift 5.
SELF_FORCING_TIME = TimeSamplingConfig(TimeDistribution.UNIFORM, 5.0, min_time=0.02, max_time=0.98)
SYNTHETIC_CAPTIONS = ("a bright room with a red wall", "a grey courtyard", "a green hedge maze")


@dataclass(frozen=True)
class DMDDataConfig:
    """Conditioning source: ``latents`` (a ``reverie encode`` directory; clips of the longest
    rollout, of which the first latent frame, actions, poses and caption are used, with
    ``resolution``, ``palindrome``, ``clips_per_window`` as in the teacher stage) or, when
    None, ``num_samples`` synthetic items of ``latent_size`` (h, w). ``batch_size`` is global."""

    latents: Path | None = None
    resolution: int = 64
    palindrome: float = 0.5
    clips_per_window: int = 8
    latent_size: tuple[int, int] = (8, 8)
    num_samples: int = 64
    batch_size: int = 1
    seed: int = 0
    num_workers: int = 0

    def clips(self, clip_latent_frames: int) -> LatentClipsConfig:
        """The teacher stage's settings for clips of that length from ``latents`` (set)."""
        return LatentClipsConfig(
            latents=self.latents,
            resolution=self.resolution,
            clip_latent_frames=clip_latent_frames,
            palindrome=self.palindrome,
            clips_per_window=self.clips_per_window,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
        )


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout length in blocks of the block grid (block 0 holds the given first frame), growing
    linearly from ``min_blocks`` to ``max_blocks`` over ``ramp_steps`` (0: ``max_blocks``)."""

    min_blocks: int = 2
    max_blocks: int = 8
    ramp_steps: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_blocks <= self.max_blocks or self.ramp_steps < 0:
            raise ValueError(f"need 1 <= min_blocks <= max_blocks and ramp_steps >= 0: {self}")

    def blocks_at(self, step: int) -> int:
        """Blocks rolled out at optimizer step ``step``."""
        if self.ramp_steps == 0:
            return self.max_blocks
        grown = (self.max_blocks - self.min_blocks) * min(step, self.ramp_steps)
        return self.min_blocks + grown // self.ramp_steps


@dataclass(frozen=True)
class DistillConfig:
    """DMD settings (Self Forcing defaults): CFG scale of the real score, critic updates per
    generator update, back-propagation variant, the time of the given first frame when scoring,
    and the time distributions of ``Ψ`` and of the critic's flow matching."""

    guidance_scale: float = 3.0
    critic_per_generator: int = 5
    backprop: Literal["replay", "naive"] = "replay"
    prefix_time: Literal["noised", "clean"] = "noised"
    dmd_time: TimeSamplingConfig = SELF_FORCING_TIME
    critic_time: TimeSamplingConfig = SELF_FORCING_TIME

    def __post_init__(self) -> None:
        if self.critic_per_generator < 1:
            raise ValueError(f"critic_per_generator must be >= 1, got {self.critic_per_generator}")


@dataclass(frozen=True)
class MemoryConfig:
    """The student's memory policy by name (``reverie.memory``) and its config fields."""

    policy: str = "full"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DMDStageConfig:
    """Experiment config of the ``dmd`` stage (module docstring; ``model.init`` must be null;
    lr 2e-6 / 4e-7 and betas (0, 0.999) are Self Forcing's)."""

    trainer: TrainerConfig
    teacher: Path | None = None
    student: Path | None = None
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    frames_per_block: int = 1
    schedule: FewStepSchedule = field(default_factory=FewStepSchedule)
    data: DMDDataConfig = field(default_factory=DMDDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    dmd: DistillConfig = field(default_factory=DistillConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(dropout=0.6))  # MAG §3.2
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    generator_optim: OptimConfig = field(default_factory=lambda: OptimConfig(2e-6, (0.0, 0.999)))
    critic_optim: OptimConfig = field(default_factory=lambda: OptimConfig(4e-7, (0.0, 0.999)))

    def backbone(self, mode: AttentionMode) -> WanDiTConfig:
        """The teacher/critic (``bidirectional``) or student (``block_causal``) backbone."""
        fpb = self.frames_per_block if mode is AttentionMode.BLOCK_CAUSAL else 1
        return self.model.backbone(AttentionConfig(mode, fpb))

    @property
    def max_frames(self) -> int:
        """Latent frames of the longest rollout, the given first frame included."""
        return self.rollout.max_blocks * self.frames_per_block


class SyntheticClips(Dataset):
    """Smoke-run conditioning as one-frame ``LatentClip`` items, from torch's global RNG (seeded
    per item by ``make_loader``): ``N(0, I)`` first latent frame ``(1, 1, C, h, w)``, uniform
    actions, identity rotations and a random walk of centres over ``num_video`` video frames."""

    def __init__(self, num_samples: int, frame_shape: tuple[int, ...], num_video: int) -> None:
        self.num_samples, self.frame_shape, self.num_video = num_samples, frame_shape, num_video

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> LatentClip:
        video, zero = self.num_video, torch.zeros(1, dtype=torch.long)
        return LatentClip(
            latents=torch.randn(1, 1, *self.frame_shape),
            actions=torch.rand(1, video, 13),
            R=torch.eye(3).expand(1, video, 3, 3).clone(),
            P=(0.05 * torch.randn(1, video, 3)).cumsum(dim=1),
            action_scale=torch.ones(1),
            start=zero,
            pivot=zero + 1,
            caption=[SYNTHETIC_CAPTIONS[index % len(SYNTHETIC_CAPTIONS)]],
            episode=[str(index)],
        )


def load_weights(model: WanDiT, path: Path, stage: str) -> None:
    """Load the weights behind ``path`` (`resolve_weights`) into ``model``; action/pose encoders
    may be absent (a converted Wan2.1 keeps them zero).

    Raises:
        FileNotFoundError / ValueError: see `resolve_weights`. CheckpointKeyError: other shapes.
    """
    weights = load_file(str(resolve_weights(path, stage)[0]))
    load_state_dict_checked(model, weights, allow_missing_prefixes=NEW_MODULE_PREFIXES)


@register_stage("dmd")
class DMDStage(Stage):
    """Self-Forcing DMD with replayed back-propagation; optimizers ``generator`` and ``critic``."""

    config_class = DMDStageConfig

    @classmethod
    def check_config(cls, config: DMDStageConfig, dist: DistContext) -> None:
        """Backbone, batch split, block sizes, memory policy, weights and latents.

        Raises:
            ValueError: naming the bad key. FileNotFoundError: a missing path.
        """
        try:
            backbone = config.backbone(AttentionMode.BLOCK_CAUSAL)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"model.preset/model.overrides/frames_per_block: {e}") from e
        if config.model.init is not None:
            raise ValueError("model.init must be null: set `teacher` / `student`")
        if config.data.batch_size % dist.world_size:
            raise ValueError(f"data.batch_size is not divisible by {dist.world_size} ranks")
        if config.rollout.min_blocks * config.frames_per_block < 2:
            raise ValueError("rollout.min_blocks * frames_per_block must be >= 2")
        try:
            get_policy(config.memory.policy, **config.memory.options)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"memory.policy/memory.options: {e}") from e
        for stage, path in (("teacher", config.teacher), ("student", config.student)):
            trained = None if path is None else resolve_weights(path, stage)[1]
            if trained is not None:
                check_same_backbone(trained, backbone, f"{stage} {path}")
        if config.data.latents is not None:
            check_latents(config.data.clips(config.max_frames), backbone)

    def __init__(self, config: DMDStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        teacher = WanDiT(config.backbone(AttentionMode.BIDIRECTIONAL))
        generator = WanDiT(config.backbone(AttentionMode.BLOCK_CAUSAL))
        critic = WanDiT(teacher.config)
        if config.teacher is not None:
            load_weights(teacher, config.teacher, "teacher")
        critic.load_state_dict(teacher.state_dict())
        generator.load_state_dict(teacher.state_dict())  # same names: attention has no weights
        if config.student is not None:
            load_weights(generator, config.student, "student")
        self.teacher = teacher.requires_grad_(False).to(dist.device)
        self.generator = dist.wrap(generator, fsdp_units=generator.blocks)
        self.critic = dist.wrap(critic, fsdp_units=critic.blocks)
        self.opts, self.scheds = {}, {}
        for name, optim in (("generator", config.generator_optim), ("critic", config.critic_optim)):
            params = self.modules()[name].parameters()
            self.opts[name], self.scheds[name] = build_optimizer(params, optim)
        self.text = build_text_encoder(config.text, generator.config.text_dim)
        policy = get_policy(config.memory.policy, **config.memory.options)
        self.student = ARStudent(self.generator, generator.config, config.schedule, policy)
        self.step = 0

    def modules(self) -> dict[str, nn.Module]:
        """``{"generator", "critic"}`` (the frozen teacher is rebuilt, not saved)."""
        return {"generator": self.generator, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """AdamW per model."""
        return self.opts

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """Warm-up per model."""
        return self.scheds

    def updates(self, step: int) -> tuple[str, ...]:
        """The critic every step, then the generator every ``critic_per_generator``-th step.
        Also records ``step`` for the rollout-length curriculum (called once per step)."""
        self.step = step
        if step % self.config.dmd.critic_per_generator == 0:
            return ("critic", "generator")
        return ("critic",)

    def batches(self, start: int) -> Iterator[LatentClip]:
        """This rank's ``LatentClip`` stream: ``data.latents`` clips, else synthetic."""
        data, model = self.config.data, self.student.config
        if data.latents is None:
            video = 1 + model.vae_temporal_stride * (self.config.max_frames - 1)
            frame = (model.in_channels, *data.latent_size)
            dataset = SyntheticClips(data.num_samples, frame, video)
        else:
            dataset = data.clips(self.config.max_frames).dataset()
        return self.stream(dataset, data, start, collate_fn=LatentClip.collate)

    # ------------------------------------------------------------------------------ pieces
    def prepare(self, clip: LatentClip) -> tuple[Conditioning, torch.Tensor, int, list[int]]:
        """What one update needs: the generator's ``Conditioning`` (first latent frame, actions,
        poses; the empty prompt with probability ``text.dropout``, MAG §3.2), the captions'
        states ``(B, L, D)`` for teacher and critic, this step's rollout length N (latent frames,
        the first included) and the exit steps: one per rollout (Self Forcing), per block."""
        clip, device = clip.to(self.dist.device), self.dist.device
        prompts = empty_text_dropout(clip.caption, self.config.text.dropout)  # CPU RNG
        cond = Conditioning(
            prefix=clip.latents[:, :1],  # (B, 1, C, h, w)
            context=encode_text(self.text, prompts, device),
            empty_context=self.text.encode_empty(len(clip))[0].to(device),
            actions=clip.actions,
            poses=(clip.R, clip.P),
        )
        frames = self.config.rollout.blocks_at(self.step) * self.config.frames_per_block
        exit_step = int(torch.randint(self.config.schedule.num_steps, ()))  # CPU RNG, no sync
        exits = [exit_step] * len(self.student.chunks(frames, cond.prefix_frames))
        return cond, encode_text(self.text, clip.caption, device), frames, exits

    def _sequence(self, cond: Conditioning, x_t: torch.Tensor, t: torch.Tensor):
        """Given first frame (diffused to ``t`` or clean, ``dmd.prefix_time``) + the noisy
        frames ``(B, N, C, h, w)``, per-frame times ``(B, N)``, actions/poses of the N frames."""
        prefix, frames = cond.prefix, x_t.shape[1]
        prefix_t = torch.zeros(len(t), cond.prefix_frames, device=t.device)
        if self.config.dmd.prefix_time == "noised":
            prefix = noisy_sample(prefix, torch.randn_like(prefix), t)
            prefix_t = prefix_t + t[:, None]
        sequence = torch.cat([prefix, x_t], dim=1)  # (B, N, C, h, w)
        times = torch.cat([prefix_t, t[:, None].expand(-1, frames)], dim=1)  # (B, N)
        stride = self.student.config.vae_temporal_stride
        return sequence, times, cond.frames(0, sequence.shape[1], stride)

    @torch.no_grad()
    def scores(self, cond: Conditioning, captions: torch.Tensor, latents: torch.Tensor):
        """x0-predictions of the real (teacher, CFG) and fake (critic) scores at ``Ψ(x̂, u)``.

        Shapes: latents ``(B, n, C, h, w)`` -> ``(real_x0, fake_x0)``, each ``(B, n, C, h, w)``.
        """
        u = sample_training_time((len(latents),), self.config.dmd.dmd_time, device=latents.device)
        x_u = noisy_sample(latents, torch.randn_like(latents), u)  # Ψ(x̂, u)
        sequence, t, kw = self._sequence(cond, x_u, u)
        guided = classifier_free_guidance(
            lambda x, s: self.teacher(x, s, captions, **kw),
            lambda x, s: self.teacher(x, s, cond.empty_context, **kw),
            self.config.dmd.guidance_scale,
        )
        real_x0 = x0_from_velocity(sequence, guided(sequence, t), t)[:, cond.prefix_frames :]
        fake_x0 = x0_from_velocity(sequence, self.critic(sequence, t, captions, **kw), t)
        return real_x0, fake_x0[:, cond.prefix_frames :]

    def critic_loss(self, cond: Conditioning, captions: torch.Tensor, latents: torch.Tensor):
        """Flow matching of the critic on generator samples ``(B, n, C, h, w)`` (float32 scalar)."""
        t = sample_training_time(
            (len(latents),), self.config.dmd.critic_time, device=latents.device
        )
        noise = torch.randn_like(latents)
        sequence, times, kw = self._sequence(cond, noisy_sample(latents, noise, t), t)
        v = self.critic(sequence, times, captions, **kw)[:, cond.prefix_frames :]
        return flow_matching_loss(v, velocity_target(latents, noise))

    # ------------------------------------------------------------------------------ updates
    def loss(self, update: str, batch: LatentClip) -> dict[str, torch.Tensor]:
        """``critic``: flow matching on a no-grad rollout; ``generator`` (``backprop: naive``):
        the DMD surrogate over one graph of the whole rollout."""
        cond, captions, frames, exits = self.prepare(batch)
        if update == "critic":
            with torch.no_grad():
                latents = self.student.rollout(cond, frames, exits, grad=False).latents
            loss = self.critic_loss(cond, captions, latents)
        else:
            score = partial(self.scores, cond, captions)
            loss = naive_dmd_loss(self.student, cond, frames, exits, score).loss
        return {"loss": loss, "rollout_frames": torch.tensor(float(frames))}

    def forward_backward(self, update, batch, autocast, scale) -> dict[str, torch.Tensor]:
        """The generator's replayed back-propagation (RELIC §4.4.2): several backward passes
        per update, each scaled by ``scale``; everything else as ``Stage.forward_backward``."""
        self.student = replace(self.student, autocast=autocast)
        if update != "generator" or self.config.dmd.backprop == "naive":
            return super().forward_backward(update, batch, autocast, scale)
        cond, captions, frames, exits = self.prepare(batch)

        def score(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with autocast():
                return self.scores(cond, captions, latents)

        result = replayed_dmd_backward(
            self.student, cond, frames, exits, score, scale=scale, no_sync=self.dist.no_sync
        )
        return {"loss": result.loss, "rollout_frames": torch.tensor(float(frames))}
