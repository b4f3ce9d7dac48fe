"""``student``: ODE initialisation of the block-causal few-step student with **hybrid forcing**
(RELIC arXiv 2512.04040 §4.4.1; CausVid arXiv 2412.07772 §3.2; Self Forcing arXiv 2506.08009).

    reverie train student --config configs/tiny/student.yaml teacher=runs/tiny/teacher \
        data.trajectories=data/tiny-ode

The student is the teacher's backbone with block-causal attention (``frames_per_block``),
initialised from the teacher's weights. A training sequence of ``B = T / frames_per_block``
latent blocks from one saved teacher trajectory (``ode`` stage) is split per sample:

    1. K ~ U{min_noisy_blocks .. max_noisy_blocks}
    2. blocks 0 .. B-K-1: clean context, the ODE's final x0, passed through
       ``compress_context(latents, positions)`` (teacher forcing of the memory), at t = 0
    3. blocks B-K .. B-1: noisy, each with its own student time t_j (diffusion forcing),
       ``j ~ U{0 .. S-1}`` over the student's S times, input = the trajectory's x at t_j
    4. x0_pred = x_in - t v_θ(x_in, t | text, actions, poses)   (per frame t)
    5. loss = mean over the noisy blocks of ||x0_pred - x0_ODE||^2

**Data-forced variant** (``data.latents`` instead of ``data.trajectories``): the sequence is a
real latent clip and the noisy blocks are its forward-process samples ``x_t = (1 - t) x0 +
t noise`` (fresh noise each step) at the student's times, regressed onto the real ``x0``
(diffusion forcing on data, Chen et al. arXiv 2407.01392). It needs no teacher samples: at our
CPU scale the teacher's ODE samples from pure noise are not yet scenes, so regressing onto them
teaches nothing about the start image; the data-forced student learns ``E[x0 | context, x_t]``
(blurrier than a distilled one, but it follows the context and the actions).

Memory (``hybrid.memory``): ``none`` and ``full`` keep the context clean and uncompressed (the
``full`` policy keeps every frame at full resolution). With teacher forcing, a memory policy is
trained on **its own context** (RELIC §4.4.1: the student learns on the memory latents the
engine will give it): each block attends only to what the policy's cache would hold when the
block is generated, read off the policy itself (``reverie.memory.context_layout``): the earlier
frames it keeps whole (``window``; ``mag`` written by the generator with the caption) as an
attention mask, and the frames it pools (``relic``, §4.3) as pooled copies of the clean tokens'
keys and values (``PooledContext``). A tuple of names draws one policy per sample, so one
student serves several policies; ``hybrid.memory_options`` holds each policy's options (use the
packaged world model's ``memory`` options). ``retrieval`` (its context depends on the content)
and MAG's memory model are rejected; the clean-latent hook :meth:`StudentStage.compress_context`
stays the identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from reverie.diffusion import FewStepSchedule, noisy_sample, x0_from_velocity
from reverie.memory import get_policy
from reverie.memory.visibility import ContextLayout, context_layout
from reverie.models import AttentionConfig, AttentionMode, WanDiT, WanDiTConfig
from reverie.models.attention import PooledContext
from reverie.text import empty_text_dropout
from reverie.tokenizer import load_vae
from reverie.training.common import (
    DiTModelConfig,
    LatentClipsConfig,
    TextConfig,
    build_text_encoder,
    check_latents,
    check_same_backbone,
    conditioning,
    encode_text,
    load_init_weights,
    load_teacher,
    resolve_checkpoint,
    stored_stage_config,
)
from reverie.training.config import OptimConfig, TrainerConfig
from reverie.training.distributed import DistContext
from reverie.training.latents import LatentClip, read_index
from reverie.training.stage import SingleModuleStage, register_stage
from reverie.training.trajectories import OdeClip, OdeDataset

# Times of the ODE trajectory and of the student's schedule agree to this tolerance.
TIME_MATCH = 1e-6

# ``hybrid.memory`` names under which every block sees every earlier frame.
FULL_CONTEXT = ("none", "full")


def pixel_loss_weights(latents: Path) -> torch.Tensor:
    """Per-channel weights that turn the normalised-latent MSE into the decoded video's MSE
    (``StudentStageConfig.loss_weighting``): ``PatchTokenizer.pixel_weights`` times the encode
    stage's ``latent_std**2``, scaled to mean 1.

    Shapes: returns ``(C,)`` float32.

    Raises:
        ValueError: the latents were not encoded by a linear patch tokenizer, or lack
            statistics. FileNotFoundError: no index or tokenizer.
    """
    index = read_index(latents, "latents")
    if index["settings"]["vae"]["config"].get("kind") != "patch" or "latent_std" not in index:
        raise ValueError(
            f"loss_weighting=pixel: {latents} was not encoded by a finished patch tokenizer"
        )
    tokenizer = load_vae(Path(index["settings"]["vae"]["weights"]).parent)
    weights = tokenizer.pixel_weights() * torch.tensor(index["latent_std"]).square()
    return (weights / weights.mean()).float()


@dataclass(frozen=True)
class HybridForcingConfig:
    """RELIC §4.4.1's split of a sequence of blocks into clean context and noisy blocks.

    Attributes:
        min_noisy_blocks, max_noisy_blocks: range of ``K`` (None: all blocks).
        memory: whose context each block sees: ``none``/``full`` (every earlier frame), or,
            with ``teacher_forcing``, a memory policy (``window``, ``mag`` written by the
            generator, ``relic``), or a tuple of these, one drawn uniformly per sample
            (module docstring).
        memory_options: keyword options per policy name (``get_policy``), e.g.
            ``{mag: {block_frames: 3, write_with_empty_text: false}}``.
        teacher_forcing: instead of splitting, make **every** block noisy and give each one the
            clean context of the blocks before it, in one forward over ``[clean | noisy]``
            (``WanDiT.forward(clean=...)``, ``teacher_forcing_mask``): every block is trained
            in the condition the streaming engine generates it in, and carries loss.
        rollout_depth: with teacher forcing, replace the clean context after a memorized
            prefix by the student's **own** one-step samples (no gradient), so that it learns
            to continue, and to correct, its own output as the streaming engine makes it do
            (exposure bias; Self Forcing arXiv 2506.08009 §1 trains on its own rollouts).
            The rollout is computed in parallel by Jacobi iteration: each of the
            ``rollout_depth`` passes is one teacher-forced forward from pure noise (the same
            noise every pass) whose x0 predictions become the next pass's context. After
            ``d`` passes the first ``d`` generated blocks equal the sequential one-step
            rollout exactly, later ones see a ``d``-deep chain of their own predictions.
            The regression target stays the real clip. 0: clean context (plain teacher
            forcing).
        min_memorized_frames, max_memorized_frames: the memorized prefix (real latents kept
            as context, like ``Session.observe``), ``P ~ U{min .. max}`` latent frames per
            sample, rounded up to whole blocks (None: up to ``T - 1``). Only with
            ``rollout_depth > 0``.
    """

    min_noisy_blocks: int = 1
    max_noisy_blocks: int | None = None
    memory: str | tuple[str, ...] = "none"
    memory_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher_forcing: bool = False
    rollout_depth: int = 0
    min_memorized_frames: int = 1
    max_memorized_frames: int | None = None

    def __post_init__(self) -> None:
        high = self.max_noisy_blocks
        if self.min_noisy_blocks < 1 or (high is not None and high < self.min_noisy_blocks):
            raise ValueError("need 1 <= min_noisy_blocks <= max_noisy_blocks")
        if self.rollout_depth < 0:
            raise ValueError(f"hybrid.rollout_depth must be >= 0, got {self.rollout_depth}")
        if self.rollout_depth and not self.teacher_forcing:
            raise ValueError("hybrid.rollout_depth > 0 needs hybrid.teacher_forcing=true")
        top = self.max_memorized_frames
        if self.min_memorized_frames < 1 or (top is not None and top < self.min_memorized_frames):
            raise ValueError("need 1 <= min_memorized_frames <= max_memorized_frames")
        names = self.memory_policies
        if not names:
            raise ValueError("hybrid.memory names no policy")
        if any(n not in FULL_CONTEXT for n in names) and not self.teacher_forcing:
            raise ValueError(
                f"hybrid.memory={self.memory!r} needs hybrid.teacher_forcing=true (the policy's "
                "context is applied as a teacher-forcing attention mask)"
            )
        unused = set(self.memory_options) - set(names)
        if unused:
            raise ValueError(f"hybrid.memory_options: {sorted(unused)} not in hybrid.memory")

    @property
    def memory_policies(self) -> tuple[str, ...]:
        """``memory`` as a tuple of names."""
        return (self.memory,) if isinstance(self.memory, str) else tuple(self.memory)

    def memory_context(
        self, num_frames: int, frames_per_block: int, token_grid: tuple[int, int]
    ) -> MemoryContexts | None:
        """Each ``memory`` policy's context over ``num_frames`` latent frames of ``token_grid``
        (rows, columns) tokens (``context_layout``), or None when every policy sees the full
        context.

        Raises:
            ValueError / KeyError / TypeError: an unknown policy, bad options, or a policy
                ``context_layout`` refuses.
        """
        names = self.memory_policies
        if all(n in FULL_CONTEXT for n in names):
            return None
        layouts = [
            context_layout(
                get_policy("full" if n in FULL_CONTEXT else n, **self.memory_options.get(n, {})),
                num_frames,
                frames_per_block,
                token_grid,
            )
            for n in names
        ]
        return MemoryContexts.from_layouts(layouts)


@dataclass(frozen=True)
class MemoryContexts:
    """The contexts of ``P`` memory policies over one clip length, stacked for drawing one per
    sample (``HybridForcingConfig.memory_context``).

    Attributes:
        visible: ``(P, T, T)`` bool, the earlier frames each policy keeps whole.
        pool: ``(Np, T * S)`` float32, every policy's pooled tokens, or None if none pools.
        pooled_visible: ``(P, T, Np)`` bool, the pooled tokens each frame sees under each
            policy (only its own), or None.
    """

    visible: torch.Tensor
    pool: torch.Tensor | None = None
    pooled_visible: torch.Tensor | None = None

    @classmethod
    def from_layouts(cls, layouts: list[ContextLayout]) -> MemoryContexts:
        """Stack ``ContextLayout``s (``reverie.memory.context_layout``)."""
        visible = torch.stack([layout.full for layout in layouts])  # (P, T, T)
        pooling = [layout.pooled_tokens() if layout.has_pooling else None for layout in layouts]
        if all(p is None for p in pooling):
            return cls(visible)
        num_frames = visible.shape[1]
        total = sum(tokens[0].shape[0] for tokens in pooling if tokens is not None)
        pooled_visible = torch.zeros(len(layouts), num_frames, total, dtype=torch.bool)
        pools, start = [], 0
        for q, (layout, tokens) in enumerate(zip(layouts, pooling, strict=True)):
            if tokens is None:
                continue
            pool, frame_of = tokens  # (n_q, T S), (n_q,)
            pools.append(pool)
            pooled_visible[q, :, start : start + len(frame_of)] = layout.pooled[:, frame_of]
            start += len(frame_of)
        return cls(visible, torch.cat(pools), pooled_visible)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, PooledContext | None]:
        """One policy per sample, CPU RNG: ``context_visible (B, T, T)`` and the
        ``PooledContext`` (``visible (B, T, Np)``) or None."""
        pick = torch.randint(0, len(self.visible), (batch_size,))  # (B,)
        if self.pool is None:
            return self.visible[pick], None
        return self.visible[pick], PooledContext(self.pool, self.pooled_visible[pick])


@dataclass(frozen=True)
class TrajectoryDataConfig:
    """What the student regresses onto: ``trajectories`` (an ``ode`` output directory) or
    ``latents`` (a ``reverie encode`` directory: the data-forced variant, module docstring)
    with its clip settings (``LatentClipsConfig``'s meaning); global micro-batch size,
    epoch-order seed, workers."""

    trajectories: Path | None = None
    batch_size: int = 2
    seed: int = 0
    num_workers: int = 0
    latents: Path | None = None
    resolution: int = 64
    clip_latent_frames: int = 20
    palindrome: float = 0.5
    clips_per_window: int = 8

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if (self.trajectories is None) == (self.latents is None):
            raise ValueError("give exactly one of data.trajectories and data.latents")

    def latent_data(self) -> LatentClipsConfig:
        """The ``LatentClipsConfig`` of the data-forced variant."""
        return LatentClipsConfig(
            latents=self.latents,
            resolution=self.resolution,
            clip_latent_frames=self.clip_latent_frames,
            palindrome=self.palindrome,
            clips_per_window=self.clips_per_window,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
        )


@dataclass(frozen=True)
class StudentStageConfig:
    """Experiment config of the ``student`` stage.

    Attributes:
        teacher: a ``teacher`` run or checkpoint directory; its weights (EMA when present)
            initialise the student, whose ``model`` must be the same backbone.
        model: the backbone. The teacher's weights initialise the student unless ``init``
            names other weights of the same backbone (an earlier student, to warm-start).
        frames_per_block: latent frames per causal block.
        schedule: the student's few-step times; must match the trajectories'.
        text: the text encoder and the empty-text probability (MAG §3.2; default 0).
        loss_weighting: ``latent`` (every normalised latent channel alike) or ``pixel``
            (channel ``c`` weighted by the pixel MSE one unit of its error costs, from the
            linear patch tokenizer of ``data.latents``: the loss is then the decoded video's
            MSE). Whitened PCA channels all have unit variance, but the first holds ~80% of
            the pixel variance and the last ten, nearly unpredictable, hold a few percent:
            the latent loss spends most of its gradient on them.
    """

    trainer: TrainerConfig
    data: TrajectoryDataConfig
    teacher: Path
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    frames_per_block: int = 1
    schedule: FewStepSchedule = field(default_factory=FewStepSchedule)
    hybrid: HybridForcingConfig = field(default_factory=HybridForcingConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(dropout=0.0))
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss_weighting: Literal["latent", "pixel"] = "latent"

    def backbone(self) -> WanDiTConfig:
        """The student's block-causal ``WanDiTConfig``."""
        attention = AttentionConfig(AttentionMode.BLOCK_CAUSAL, self.frames_per_block)
        return self.model.backbone(attention)


@register_stage("student")
class StudentStage(SingleModuleStage):
    """ODE regression with hybrid forcing; one optimizer named ``student``."""

    key = "student"

    config_class = StudentStageConfig

    @classmethod
    def check_config(cls, config: StudentStageConfig, dist: DistContext) -> None:
        """The teacher is the same backbone; the trajectories' times match ``schedule``, their
        length splits into blocks and they fit the model; the batch splits over the ranks.

        Raises:
            ValueError / FileNotFoundError: naming the key and both values.
        """
        try:
            backbone = config.backbone()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"model.preset/model.overrides/frames_per_block: {e}") from e
        if config.model.init is not None and not Path(config.model.init).exists():
            raise FileNotFoundError(f"model.init: nothing at {config.model.init}")
        ckpt, stored = resolve_checkpoint(config.teacher, "teacher")
        teacher = stored_stage_config("teacher", stored).backbone()
        check_same_backbone(teacher, backbone, f"teacher checkpoint {ckpt}")
        if config.loss_weighting == "pixel":
            if config.data.latents is None:
                raise ValueError("loss_weighting=pixel needs data.latents (a patch tokenizer)")
            pixel_loss_weights(config.data.latents)  # raises for a non-linear tokenizer
        if config.data.latents is not None:
            index = check_latents(config.data.latent_data(), backbone)  # channels, size, length
            _, h, w = index["settings"]["latent_shape"]
            grid = (h // backbone.patch_size[1], w // backbone.patch_size[2])
            cls._check_blocks(config, config.data.clip_latent_frames, dist, grid)
            return
        index = read_index(config.data.trajectories, "ode")
        times = index["times"][:-1]
        wanted = config.schedule.times
        if len(times) != len(wanted) or any(
            abs(a - b) > TIME_MATCH for a, b in zip(times, wanted, strict=False)
        ):
            raise ValueError(f"data.trajectories has times {times}, schedule.times are {wanted}")
        channels, h, w = index["latent_shape"]
        if channels != backbone.in_channels or h % backbone.patch_size[1]:
            raise ValueError(f"trajectories of ({channels}, {h}, {w}) do not fit the model")
        grid = (h // backbone.patch_size[1], w // backbone.patch_size[2])
        cls._check_blocks(config, index["settings"]["clip_latent_frames"], dist, grid)

    @staticmethod
    def _check_blocks(
        config: StudentStageConfig, frames: int, dist: DistContext, grid: tuple[int, int]
    ) -> None:
        """The clip splits into blocks, ``max_noisy_blocks`` fits, the batch splits, and each
        memory policy's context over ``frames`` latent frames can be read off it
        (``context_layout``)."""
        fpb = config.frames_per_block
        if frames % fpb:
            raise ValueError(f"{frames} latent frames do not split into blocks of {fpb}")
        high = config.hybrid.max_noisy_blocks
        if high is not None and high > frames // fpb:
            raise ValueError(f"hybrid.max_noisy_blocks={high} > {frames // fpb} blocks")
        if config.data.batch_size % dist.world_size:
            raise ValueError(f"data.batch_size={config.data.batch_size} does not split over ranks")
        try:  # the memory policies' context over the training clips' length
            config.hybrid.memory_context(frames, fpb, grid)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"hybrid.memory={config.hybrid.memory!r}: {e}") from e

    def __init__(self, config: StudentStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        model = WanDiT(config.backbone())
        teacher, _ = load_teacher(config.teacher)
        model.load_state_dict(teacher.state_dict())  # same names: attention has no weights
        del teacher
        if config.model.init is not None:  # warm start from an earlier student
            load_init_weights(model, config.model.init)
        self.text = build_text_encoder(config.text, model.config.text_dim)
        self.student = self.train_module(dist.wrap(model, fsdp_units=model.blocks), config.optim)
        if config.data.latents is not None:
            self.dataset, self.collate = config.data.latent_data().dataset(), LatentClip.collate
        else:
            self.dataset, self.collate = OdeDataset(config.data.trajectories), OdeClip.collate
        self.times = torch.tensor(config.schedule.times)  # (S,)
        self.patch_size = model.config.patch_size  # (pt, ph, pw)
        self._contexts: dict[tuple, MemoryContexts | None] = {}  # (T, rows, cols) -> contexts
        channels = model.config.out_channels
        self.channel_weights = (  # (C,), mean 1
            pixel_loss_weights(config.data.latents)
            if config.loss_weighting == "pixel"
            else torch.ones(channels)
        )

    def batches(self, start: int) -> Iterator[OdeClip | LatentClip]:
        """Micro-batches of ``data.batch_size / world_size`` trajectories (``OdeClip``) or real
        clips (``LatentClip``, the data-forced variant)."""
        return self.stream(self.dataset, self.config.data, start, collate_fn=self.collate)

    def compress_context(self, latents: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The memory policy's view of the clean context (RELIC §4.4.1: "clean, spatially
        compressed memory latents"); ``none``/``full`` keep it unchanged. Override to plug in
        a compressing policy.

        Shapes: latents ``(B, T, C, h, w)``; positions ``(T,)`` int64 absolute latent-frame
        indices; returns ``(B, T, C, h, w)``.
        """
        return latents

    def memorized_prefix(self, batch_size: int, num_frames: int) -> torch.Tensor:
        """Draw the memorized prefix of each sample (``hybrid.min/max_memorized_frames``),
        CPU RNG.

        Shapes: returns ``(B, T)`` bool, True on the first ``P`` latent frames (whole blocks;
        frame 0 always; the last block is always generated when ``T`` holds two blocks).
        """
        hybrid, fpb = self.config.hybrid, self.config.frames_per_block
        low = min(hybrid.min_memorized_frames, num_frames - 1)
        high = min(hybrid.max_memorized_frames or num_frames - 1, num_frames - 1)
        p = torch.randint(low, max(low, high) + 1, (batch_size,))  # (B,)
        p = (p + fpb - 1) // fpb * fpb  # whole blocks, at least one left to generate
        p = p.clamp(max=max(fpb, (num_frames - 1) // fpb * fpb))
        return torch.arange(num_frames)[None] < p[:, None]  # (B, T)

    def memory_inputs(self, latents: torch.Tensor) -> dict[str, object]:
        """Draw one ``hybrid.memory`` policy per sample of ``latents``; its context as
        ``WanDiT.forward`` keywords (``context_visible``, ``pooled_context``), CPU RNG.
        Empty when every policy sees the full context (nothing drawn).

        Shapes: latents ``(B, T, C, h, w)``; ``context_visible (B, T, T)`` bool.
        """
        b, frames, _, h, w = latents.shape
        _, ph, pw = self.patch_size
        key = (frames, h // ph, w // pw)
        if key not in self._contexts:
            fpb = self.config.frames_per_block
            self._contexts[key] = self.config.hybrid.memory_context(frames, fpb, key[1:])
        contexts = self._contexts[key]
        if contexts is None:
            return {}
        visible, pooled = contexts.draw(b)
        return {"context_visible": visible.to(latents.device), "pooled_context": pooled}

    @torch.no_grad()
    def rollout_context(
        self,
        context: torch.Tensor,
        text: torch.Tensor,
        clip: LatentClip | OdeClip,
        memory: dict[str, object] | None = None,
    ) -> torch.Tensor:
        """The context with every frame after the memorized prefix replaced by the student's
        own one-step sample, by ``hybrid.rollout_depth`` Jacobi passes (``HybridForcingConfig``).

        Shapes: context ``(B, T, C, h, w)`` real latents, text ``(B, L, D)``,
        memory: the drawn memory context (``memory_inputs``); returns
        ``(B, T, C, h, w)`` (no gradient).
        """
        b, frames = context.shape[:2]
        memorized = self.memorized_prefix(b, frames).to(context.device)[..., None, None, None]
        noise = torch.randn_like(context)
        t = torch.full((b, frames), self.times[0].item(), device=context.device)  # (B, T)
        generated = context
        for _ in range(self.config.hybrid.rollout_depth):
            v = self.student(
                noise,
                t,
                text,
                clean=generated,
                **(memory or {}),
                **conditioning(clip),
            )
            x0 = x0_from_velocity(noise, v.float(), t)  # (B, T, C, h, w)
            generated = torch.where(memorized, context, x0)
        return generated

    def hybrid_split(self, batch_size: int, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the noisy blocks and their student-time indices (steps 1 and 3), CPU RNG.

        Shapes: returns ``noisy (B, T)`` bool (True on the last K blocks; every block with
        ``hybrid.teacher_forcing``) and ``step (B, T)`` int64 in ``[0, S)``, both constant
        within a block.
        """
        fpb, hybrid = self.config.frames_per_block, self.config.hybrid
        blocks = num_frames // fpb
        if hybrid.teacher_forcing:
            k = torch.full((batch_size,), blocks)  # (B,)
        else:
            high = hybrid.max_noisy_blocks or blocks
            k = torch.randint(hybrid.min_noisy_blocks, high + 1, (batch_size,))  # (B,)
        noisy = torch.arange(blocks)[None] >= (blocks - k)[:, None]  # (B, blocks)
        step = torch.randint(0, len(self.times), (batch_size, blocks))  # (B, blocks)
        return noisy.repeat_interleave(fpb, 1), step.repeat_interleave(fpb, 1)  # (B, T) x 2

    def loss(self, update: str, batch: OdeClip | LatentClip) -> dict[str, torch.Tensor]:
        """``{"loss", "noisy_fraction"}`` of hybrid-forcing x0 regression (steps 1-5), onto the
        ODE's endpoint or, for a ``LatentClip``, onto the real clip (module docstring)."""
        device = self.dist.device
        clip = batch.to(device)
        real = isinstance(clip, LatentClip)
        x0 = clip.latents if real else clip.trajectory[:, -1]  # (B, T, C, h, w): real | ODE end
        b, frames = x0.shape[:2]
        noisy, step = self.hybrid_split(b, frames)  # (B, T) each
        noisy, step, times = noisy.to(device), step.to(device), self.times[step].to(device)
        if real:
            x_noisy = noisy_sample(x0, torch.randn_like(x0), times)  # forward process at t_j
        else:
            rows = torch.arange(b, device=device)[:, None]  # (B, 1)
            frame_idx = torch.arange(frames, device=device)[None]  # (1, T)
            x_noisy = clip.trajectory[rows, step, frame_idx]  # (B, T, C, h, w): ODE state at t_j
        positions = torch.arange(frames, device=device)
        context = self.compress_context(x0, positions)  # (B, T, C, h, w)
        captions = empty_text_dropout(clip.caption, self.config.text.dropout)
        text = encode_text(self.text, captions, device)  # (B, L, D)
        memory = self.memory_inputs(x0)  # this step's policy per sample
        if self.config.hybrid.rollout_depth:
            context = self.rollout_context(context, text, clip, memory)
        mask = noisy[:, :, None, None, None]  # (B, T, 1, 1, 1)
        x_in = torch.where(mask, x_noisy, context)
        t = torch.where(noisy, times, torch.zeros_like(times))  # (B, T)
        clean = context if self.config.hybrid.teacher_forcing else None  # (all blocks noisy)
        v = self.student(
            x_in, t, text, clean=clean, **memory, **conditioning(clip)
        )  # (B, T, C, h, w)
        x0_pred = x0_from_velocity(x_in, v.float(), t)
        weights = self.channel_weights.to(device)[:, None, None]  # (C, 1, 1)
        err = (x0_pred - x0).square() * weights * mask  # (B, T, C, h, w)
        loss = err.sum() / (mask.sum() * x0[0, 0].numel())
        return {"loss": loss, "noisy_fraction": noisy.float().mean()}

    def samples(self, batch: OdeClip) -> int:
        """Trajectories in the micro-batch."""
        return len(batch)
