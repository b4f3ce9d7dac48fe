"""``ode``: teacher ODE trajectories at the student's denoising times, for its ODE initialisation
(CausVid arXiv 2412.07772 §3.2; Self Forcing arXiv 2506.08009 §4; RELIC arXiv 2512.04040 §4.4.1).

    reverie train ode --config configs/tiny/ode.yaml ode.teacher=runs/tiny/teacher \
        ode.latents=data/tiny-latents ode.out=data/tiny-ode trainer.max_steps=4

Per clip (actions, poses and caption of a ``LatentClipDataset`` clip; its latents are not used):

    1. noise x_1 ~ N(0, I) of the clip's latent shape, seeded by (seed, clip index)
    2. Euler steps of the teacher's flow ODE (``euler_sample``'s update, CFG with the empty
       prompt at ``guidance_scale``) on Wan's shifted grid ``sampling_times(num_steps, shift)``
       merged with the student's times ``schedule.times`` (1, .9375, .8333, .625), so that
    3. x is recorded exactly at each student time, plus the final x_0:
       ``trajectory (S + 1, T, C, h, w)`` with times ``(*schedule.times, 0)``.

Nothing is trained: one trainer step generates one shard of ``clips_per_shard`` clips
(``trainer.max_steps`` = shards), written with the ``ShardStore`` of ``reverie encode``, so an
interrupted run resumes at the first unlisted shard (re-run with ``--resume``, or with a fresh
``trainer.run_dir``: listed shards are skipped either way). Per clip ``<key>`` a shard holds
``<key>/trajectory`` (S+1, T, C, h, w) float32, ``<key>/actions`` (1+4(T-1), 13), ``<key>/R``,
``<key>/P`` (as fed to the teacher: relative to the first frame) and metadata (caption,
episode, start, pivot); ``index.json`` holds ``times`` and the latent statistics. The student
reads them with ``reverie.training.trajectories.OdeDataset``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from reverie.diffusion import FewStepSchedule, classifier_free_guidance, sampling_times
from reverie.diffusion.samplers import VelocityFn
from reverie.models import WanDiTConfig
from reverie.training.common import (
    LatentClipsConfig,
    build_text_encoder,
    check_latents,
    conditioning,
    encode_text,
    load_teacher,
    resolve_checkpoint,
    stored_stage_config,
)
from reverie.training.config import TrainerConfig
from reverie.training.data import make_loader
from reverie.training.distributed import DistContext
from reverie.training.latents import LatentClip, LatentClipDataset, ShardStore
from reverie.training.stage import AutocastFn, Stage, register_stage

# Two float times closer than this are the same grid point.
TIME_TOLERANCE = 1e-9


@dataclass(frozen=True)
class OdeSettings:
    """What to generate.

    Attributes:
        teacher: a ``teacher`` run or checkpoint directory (EMA weights if ``ema``).
        latents: a ``reverie encode`` directory (conditioning source).
        out: output directory of the trajectory shards.
        clip_latent_frames: ``T`` per clip; palindrome: probability (RELIC §3.4).
        clips_per_shard: clips per shard (= per trainer step, one batched ODE solve).
        num_steps, shift: the teacher's Euler grid (Wan2.1: shift 5).
        guidance_scale: CFG scale against the empty prompt (1 = none; Self Forcing: 3).
        schedule: the student's few-step times (recorded).
        seed: seed of the clips and noises; num_workers: DataLoader workers.
    """

    teacher: Path
    latents: Path
    out: Path
    clip_latent_frames: int = 20
    palindrome: float = 0.5
    clips_per_shard: int = 4
    num_steps: int = 24
    shift: float = 5.0
    guidance_scale: float = 3.0
    schedule: FewStepSchedule = field(default_factory=FewStepSchedule)
    ema: bool = True
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if min(self.clip_latent_frames, self.clips_per_shard, self.num_steps) < 1:
            raise ValueError("clip_latent_frames, clips_per_shard and num_steps must be >= 1")


@dataclass(frozen=True)
class OdeStageConfig:
    """Experiment config of the ``ode`` stage (``trainer.max_steps`` = shards to write)."""

    trainer: TrainerConfig
    ode: OdeSettings


def ode_time_grid(num_steps: int, shift: float, record: tuple[float, ...]) -> list[float]:
    """Wan's shifted Euler grid with the ``record`` times inserted (grid points within
    ``TIME_TOLERANCE`` of one are replaced by it), from 1 down to 0."""
    grid = sampling_times(num_steps, shift).tolist()
    grid = [t for t in grid if all(abs(t - r) > TIME_TOLERANCE for r in record)]
    return sorted(set(grid) | set(record), reverse=True)


def teacher_trajectory(
    velocity_fn: VelocityFn, noise: torch.Tensor, grid: list[float], record: tuple[float, ...]
) -> torch.Tensor:
    """Euler-integrate the flow ODE from ``noise`` (t = 1) and keep x at the ``record`` times.

    ``x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k)`` (``euler_sample``), unrolled here because
    the intermediate states are the product.

    Shapes:
        noise: ``(B, T, C, h, w)``; grid: floats from 1 to 0 containing every ``record`` time.
        returns ``(B, len(record) + 1, T, C, h, w)``: x at each record time, then x_0.

    Raises:
        ValueError: a record time missing from the grid.
    """
    missing = [r for r in record if r not in grid]
    if missing:
        raise ValueError(f"record times {missing} are not on the grid")
    states, x = [], noise
    for t, t_next in pairwise(grid):
        if t in record:
            states.append(x)
        v = velocity_fn(x, torch.full((x.shape[0],), t, device=x.device))  # (B, T, C, h, w)
        x = x + (t_next - t) * v
    states.append(x)
    return torch.stack(states, dim=1)  # (B, S + 1, T, C, h, w)


class _ClipsWithNoise(Dataset):
    """``(clip, noise)``: a ``LatentClipDataset`` item and ``N(0, I)`` noise of its latent
    shape, both from the global RNGs that ``make_loader`` seeds per clip index."""

    def __init__(self, clips: LatentClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[LatentClip, torch.Tensor]:
        clip = self.clips[i]
        return clip, torch.randn(clip.latents.shape)


def _collate(items: list[tuple[LatentClip, torch.Tensor]]) -> tuple[LatentClip, torch.Tensor]:
    return LatentClip.collate([c for c, _ in items]), torch.cat([n for _, n in items])


@register_stage("ode")
class OdeStage(Stage):
    """Generates trajectory shards with a frozen teacher; trains nothing (module docstring)."""

    config_class = OdeStageConfig

    @classmethod
    def check_config(cls, config: OdeStageConfig, dist: DistContext) -> None:
        """One process, no accumulation; the teacher checkpoint exists; the latents fit it.

        Raises:
            ValueError / FileNotFoundError: naming the key.
        """
        if dist.world_size != 1 or config.trainer.grad_accum != 1:
            raise ValueError("ode generation runs on one process with trainer.grad_accum=1")
        _, stored = resolve_checkpoint(config.ode.teacher, "teacher")
        check_latents(cls._data(config, stored["data"]["resolution"]), cls._backbone(stored))

    @staticmethod
    def _data(config: OdeStageConfig, resolution: int) -> LatentClipsConfig:
        """The conditioning clips: one per window per epoch, at the teacher's resolution."""
        o = config.ode
        return LatentClipsConfig(
            o.latents,
            resolution=resolution,
            clip_latent_frames=o.clip_latent_frames,
            palindrome=o.palindrome,
            clips_per_window=1,
        )

    @staticmethod
    def _backbone(stored: dict[str, Any]) -> WanDiTConfig:
        """The teacher's backbone from its stored experiment config."""
        return stored_stage_config("teacher", stored).backbone()

    def __init__(self, config: OdeStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        o = config.ode
        teacher, teacher_config = load_teacher(o.teacher, ema=o.ema)
        self.teacher = teacher.requires_grad_(False).eval().to(dist.device)
        self.text = build_text_encoder(teacher_config.text, teacher.config.text_dim)
        self.clips = self._data(config, teacher_config.data.resolution).dataset()
        self.record = o.schedule.times
        self.grid = ode_time_grid(o.num_steps, o.shift, self.record)
        ckpt, _ = resolve_checkpoint(o.teacher, "teacher")
        settings = {
            "teacher": str(ckpt.resolve()),
            "ema": o.ema,
            "latents": str(Path(o.latents).resolve()),
            "clip_latent_frames": o.clip_latent_frames,
            "palindrome": o.palindrome,
            "clips_per_shard": o.clips_per_shard,
            "grid": self.grid,
            "guidance_scale": o.guidance_scale,
            "seed": o.seed,
        }
        self.store = ShardStore(o.out, "ode", settings, config.trainer.max_steps)
        self.store.update(
            times=[*self.record, 0.0],
            latent_shape=list(self.clips.latent_shape),
            latent_mean=self.clips.index["latent_mean"],
            latent_std=self.clips.index["latent_std"],
        )
        # The trainer steps one optimizer per update name; generation has nothing to train.
        self.null_opt = torch.optim.SGD([{"params": []}], lr=0.0)

    def modules(self) -> dict[str, nn.Module]:
        """None: the frozen teacher is reloaded from its checkpoint, not saved."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"ode": an optimizer without parameters}`` (one update per step)."""
        return {"ode": self.null_opt}

    def batches(self, start: int) -> Iterator[tuple[int, LatentClip, torch.Tensor]]:
        """``(shard index, clips, noise (b, T, C, h, w))``, shard ``start`` first."""
        o = self.config.ode
        loader = make_loader(
            _ClipsWithNoise(self.clips),
            o.clips_per_shard,
            seed=o.seed,
            start=start,
            shuffle=False,
            num_workers=o.num_workers,
            collate_fn=_collate,
        )
        return ((start + i, *batch) for i, batch in enumerate(loader))

    def velocity(self, clip: LatentClip) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The teacher's (guided) velocity for ``clip``'s conditioning: ``(x, t) -> v``."""
        device, cond = self.dist.device, conditioning(clip)
        context = encode_text(self.text, clip.caption, device)  # (B, L, D)
        empty = encode_text(self.text, [""] * len(clip), device)

        def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.teacher(x, t, context, **cond)

        def unconditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.teacher(x, t, empty, **cond)

        scale = self.config.ode.guidance_scale
        return (
            conditional
            if scale == 1
            else classifier_free_guidance(conditional, unconditional, scale)
        )

    def forward_backward(
        self, update: str, batch: tuple, autocast: AutocastFn, scale: float
    ) -> dict[str, torch.Tensor]:
        """Generate and write one shard unless it is listed already (no backward pass)."""
        shard, clip, noise = batch
        if self.store.is_done(shard):
            return {"skipped": torch.tensor(1.0)}
        clip = clip.to(self.dist.device)
        with torch.no_grad(), autocast():
            trajectory = teacher_trajectory(
                self.velocity(clip), noise.to(self.dist.device), self.grid, self.record
            ).float()  # (B, S + 1, T, C, h, w)
        first = shard * self.config.ode.clips_per_shard
        tensors, items = {}, []
        for i in range(len(clip)):
            key = f"{first + i:08d}"
            for name, value in (("trajectory", trajectory), ("actions", clip.actions)):
                tensors[f"{key}/{name}"] = value[i]
            tensors[f"{key}/R"], tensors[f"{key}/P"] = clip.R[i], clip.P[i]
            items.append(
                {
                    "key": key,
                    "caption": clip.caption[i],
                    "episode": clip.episode[i],
                    "start": int(clip.start[i]),
                    "pivot": int(clip.pivot[i]),
                }
            )
        self.store.write(shard, tensors, items)
        return {"skipped": torch.tensor(0.0), "x0_std": trajectory[:, -1].std()}

    def loss(self, update: str, batch: Any) -> dict[str, torch.Tensor]:
        """Not used: ODE generation has no loss (:meth:`forward_backward` is overridden).

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("the ode stage generates trajectories; it has no loss")

    def samples(self, batch: tuple) -> int:
        """Clips in the shard."""
        return len(batch[1])
