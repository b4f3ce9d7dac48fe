"""``mag``: MAG's memory model, an autoencoder through the KV cache (Memorize-and-Generate
arXiv 2512.18741 §3.3-3.4; official ``model/compress_model.py``).

    reverie train mag --config configs/tiny/mag.yaml trainer.max_steps=200
    policy = get_policy("mag", writer=memory_model_from_run("runs/tiny/mag"))

The memory model is a block-causal ``WanDiT`` of the student's architecture with
``frames_per_block = b`` (the compression rate). One model plays both roles (MAG: "the encoder
and decoder are implemented as a single model"). For each block ``x0 (b frames)`` of a clip:

1. **Encode** (:func:`compress_block`): the inference cache write, ``write_block`` with the
   ``mag`` policy and the model as writer: one forward on the clean block at flow time 0 with
   the empty prompt, full attention inside the block, then ``MagPolicy.after_write`` keeps only
   the **last frame's K/V** (``b`` frames -> 1 frame of tokens). The block lands at a random
   block-aligned RoPE start ``o ∈ {0, b, 2b, ...} ≤ memory.max_start_frame - b``, one per
   sample (MAG: start index < 120).
2. **Decode**: the same model denoises ``x_t = (1 - t) x0 + t ε`` of the *same* ``b`` frames at
   the same positions ``o .. o+b-1``, with the empty prompt, attending to the kept frame's K/V
   and to its own block (MAG's ``compress`` mask); ``t`` is drawn from the few-step schedule's
   times (MAG trains at its 4 denoising steps).
3. Loss: flow matching ``||v_θ - (ε - x0)||²`` on the ``b`` frames. The K/V stay in the graph,
   so the gradient also trains the encoding pass to pack the block into its last frame.

Like MAG's, the memory model is trained without actions/poses: its action/pose encoders stay
frozen (zero-initialised, or the student's from ``model.init``).

The write pass runs through ``write_block`` exactly as at inference, which writes at the cache's
next frame (0 for a fresh cache); the kept frame is then re-indexed to ``o + b - 1``
(``KVCache.shift_time``, which also rotates the kept keys by the change). With no
actions/poses and RoPE in attention being relative, this equals writing at ``o`` (tested), so
RoPE randomisation only moves positions in absolute terms — kept for parity with MAG.

Evaluation (``eval.every``): :func:`reconstruction_quality` — compress each block, decode it
with the few-step sampler, PSNR/SSIM against the input — for ``b ∈ eval.block_sizes`` (MAG
Table 4 is one model per b; here *this* model is evaluated at every b). Rows
``{"step", "eval/block_sizes", "eval/b3/psnr", ...}`` are appended to ``<run_dir>/metrics.jsonl``
by rank 0 before the optimizer step ``step`` (so they describe the weights after ``step`` steps;
a resumed run does not repeat a row already there, and resume truncates rows after the checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from reverie.config_utils import from_dict
from reverie.diffusion import (
    FewStepSchedule,
    few_step_sample,
    noisy_sample,
    velocity_target,
    x0_from_velocity,
)
from reverie.memory import get_policy, write_block
from reverie.metrics import psnr, ssim
from reverie.models import AttentionConfig, AttentionMode, KVCache, WanDiT, WanDiTConfig, get_preset
from reverie.models.checkpoints import WEIGHTS_NAME
from reverie.models.state_dicts import load_state_dict_checked
from reverie.objectives import flow_matching_loss
from reverie.text import get_text_encoder
from reverie.training.common import stage_weights
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.distributed import DistContext, unwrap
from reverie.training.frame_clips import FrameClipsConfig, check_data, latent_clips
from reverie.training.metrics import METRICS, read_metrics
from reverie.training.stage import Stage, register_stage

logger = logging.getLogger(__name__)

PIXEL_RANGE = 2.0  # pixels in [-1, 1] (docs/conventions.md)
EVAL_MARK = "eval/block_sizes"  # key present in every eval row of metrics.jsonl


@dataclass(frozen=True)
class MagModelConfig:
    """The memory model: ``preset`` + ``overrides`` (``WanDiTConfig`` fields), block-causal with
    ``frames_per_block`` = b (MAG: 3); ``init``: starting weights (MAG: the Self-Forcing student),
    a ``reverie.models.save_checkpoint`` directory or a ``.safetensors`` file; random if None;
    ``prediction``: the head's target, as the student's (``WanDiTConfig.prediction``)."""

    preset: str = "tiny"
    overrides: dict[str, int] = field(default_factory=dict)
    frames_per_block: int = 3
    init: Path | None = None
    prediction: str = "velocity"

    def backbone(self) -> WanDiTConfig:
        """The block-causal backbone config."""
        attention = AttentionConfig(AttentionMode.BLOCK_CAUSAL, self.frames_per_block)
        return get_preset(
            self.preset, **self.overrides, attention=attention, prediction=self.prediction
        )


@dataclass(frozen=True)
class MemoryTrainingConfig:
    """Training of the memory model: the few-step ``timesteps``/``shift`` (training times and
    the eval sampler), RoPE start ``< max_start_frame`` (MAG: 120) drawn per sample (one forward
    pair per distinct start) or, if not ``start_per_sample``, once per micro-batch (MAG's case
    at batch 1 per GPU), ``blocks_per_clip`` blocks cut from each clip, and the text encoder
    giving the empty prompt."""

    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = 5.0
    max_start_frame: int = 120
    start_per_sample: bool = True
    blocks_per_clip: int = 1
    text_encoder: str = "minilm"
    text_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        FewStepSchedule(self.timesteps, self.shift)  # raises on bad values
        if self.blocks_per_clip < 1:
            raise ValueError(f"blocks_per_clip must be >= 1, got {self.blocks_per_clip}")


@dataclass(frozen=True)
class MagEvalConfig:
    """Reconstruction eval every ``every`` steps (0: never) at each of ``block_sizes`` on
    ``num_clips`` fixed clips of ``clip_frames`` latent frames (drawn with ``seed``)."""

    every: int = 0
    block_sizes: tuple[int, ...] = (1, 2, 3, 4, 5)
    num_clips: int = 2
    clip_frames: int = 10
    seed: int = 4321

    def __post_init__(self) -> None:
        if self.every < 0 or self.num_clips < 1 or not self.block_sizes:
            raise ValueError("need eval.every >= 0, eval.num_clips >= 1, some eval.block_sizes")
        if min(self.block_sizes) < 1 or max(self.block_sizes) > self.clip_frames:
            raise ValueError(f"eval.block_sizes must lie in [1, clip_frames={self.clip_frames}]")


@dataclass(frozen=True)
class MagStageConfig:
    """Experiment config of the ``mag`` stage."""

    trainer: TrainerConfig
    model: MagModelConfig = field(default_factory=MagModelConfig)
    data: FrameClipsConfig = field(default_factory=FrameClipsConfig)
    memory: MemoryTrainingConfig = field(default_factory=MemoryTrainingConfig)
    eval: MagEvalConfig = field(default_factory=MagEvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(2e-6, (0.0, 0.999)))


# --------------------------------------------------------------------- the compressed cache


def compress_block(
    model: nn.Module, block: torch.Tensor, empty_context: torch.Tensor, frame_offset: int = 0
) -> KVCache:
    """MAG's encoder (§3.4): the ``mag`` policy's cache write of a clean block, in the caller's
    grad mode (gradients reach the write pass when enabled).

    Shapes:
        block: ``(B, b, C, h, w)`` clean latents; empty_context: ``(B, L, text_dim)``.
        returns a fresh ``KVCache`` holding one frame (the block's last) at
        ``frame_offset + b - 1``.

    Raises:
        ValueError: from the model on inconsistent shapes.
    """
    policy = get_policy("mag", writer=model, max_frames=None)
    cache = unwrap(model).new_cache()
    write_block(policy, cache, model, block, empty_context, empty_context=empty_context)
    cache.shift_time(frame_offset)
    return cache


@contextlib.contextmanager
def block_size_view(model: WanDiT, block_size: int) -> Iterator[WanDiT]:
    """``model`` with block-causal blocks of ``block_size`` frames for the duration (the
    attention pattern is read from ``model.config`` at each forward; weights are shared)."""
    config = model.config
    model.config = config.replace(attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, block_size))
    try:
        yield model
    finally:
        model.config = config


@torch.no_grad()
def reconstruct(
    model: WanDiT,
    latents: torch.Tensor,
    block_size: int,
    *,
    empty_context: torch.Tensor,
    schedule: FewStepSchedule | None = None,
    frame_offset: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """Compress every block of ``block_size`` frames to its last frame's K/V and decode it back
    with the few-step sampler (MAG §3.4, Fig. 5), blocks independently.

    Shapes:
        latents: ``(B, T, C, h, w)``, ``T >= block_size``; empty_context: ``(1, L, D)``.
        returns ``(B, n b, C, h, w)``, ``n = T // block_size`` (trailing frames dropped).

    Raises:
        ValueError: ``T < block_size``, ``frame_offset`` not a multiple of ``block_size``.
    """
    if latents.ndim != 5 or not 1 <= block_size <= latents.shape[1]:
        raise ValueError(f"need (B, T >= {block_size}, C, h, w) latents, got {latents.shape}")
    if frame_offset % block_size:
        raise ValueError(f"frame_offset {frame_offset} is not a multiple of {block_size}")
    n = latents.shape[1] // block_size
    blocks = rearrange(latents[:, : n * block_size], "b (n k) c h w -> (b n) k c h w", n=n)
    context = empty_context.expand(len(blocks), -1, -1)  # (B n, L, D)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(blocks.shape, generator=g).to(blocks)
    with block_size_view(model, block_size) as view:
        cache = compress_block(view, blocks, context, frame_offset)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return view(x, t, context, cache=cache, frame_offset=frame_offset)

        out = few_step_sample(velocity, noise, schedule=schedule, generator=g)
    return rearrange(out, "(b n) k c h w -> b (n k) c h w", n=n)


def reconstruction_quality(
    model: WanDiT,
    latents: torch.Tensor,
    block_size: int,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    empty_context: torch.Tensor,
    schedule: FewStepSchedule | None = None,
    data_range: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Memory fidelity at compression rate ``block_size`` (MAG Table 4): :func:`reconstruct`,
    then PSNR (dB), SSIM and MSE against the input, averaged over samples.

    Latent space by default, with ``data_range`` = the input's max - min unless given. With
    ``decode`` (e.g. the VAE: latents ``(B, T, C, h, w)`` -> video ``(B, T', 3, H, W)`` in
    [-1, 1]) both reconstruction and input are decoded and compared in pixels (range 2), so the
    VAE's own error is left out.

    Shapes: latents ``(B, T, C, h, w)``; empty_context ``(1, L, D)``.

    Returns:
        ``{"psnr", "ssim", "mse"}`` floats (``psnr`` is ``inf`` for a perfect reconstruction),
        and ``psnr_last_frame``: the baseline of repeating each block's clean last frame (what
        the cache must beat to hold more than that frame; ``inf`` at ``block_size = 1``).

    Raises:
        ValueError: see :func:`reconstruct`.
    """
    rec = reconstruct(
        model, latents, block_size, empty_context=empty_context, schedule=schedule, seed=seed
    )
    ref = latents[:, : rec.shape[1]]
    blocks = ref.unflatten(1, (-1, block_size))  # (B, n, b, C, h, w)
    last = blocks[:, :, -1:].expand_as(blocks).flatten(1, 2)  # each block's last frame, repeated
    with torch.no_grad():
        if decode is not None:
            rec, ref, last = decode(rec), decode(ref), decode(last)
            data_range = PIXEL_RANGE if data_range is None else data_range
        elif data_range is None:
            data_range = float(ref.max() - ref.min())  # host sync: eval only
        mse = (rec.float() - ref.float()).square().mean()
        return {
            "psnr": psnr(rec, ref, data_range).mean().item(),
            "ssim": ssim(rec, ref, data_range).mean().item(),
            "mse": mse.item(),
            "psnr_last_frame": psnr(last, ref, data_range).mean().item(),
        }


# ---------------------------------------------------------------------------- the stage
@register_stage("mag")
class MagStage(Stage):
    """MAG's memory model trained as a KV-cache autoencoder; module and optimizer ``memory``."""

    config_class = MagStageConfig
    component = "memory_model"

    @classmethod
    def check_config(cls, config: MagStageConfig, dist: DistContext) -> None:
        """Data, backbone, RoPE range, paths.

        Raises:
            ValueError / FileNotFoundError: naming the bad key.
        """
        check_data(config.data, dist)
        try:
            config.model.backbone()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"model.preset/model.overrides/model.frames_per_block: {e}") from e
        if config.memory.max_start_frame < config.model.frames_per_block:
            raise ValueError("memory.max_start_frame must be >= model.frames_per_block")
        if config.model.init is not None and not config.model.init.exists():
            raise FileNotFoundError(f"model.init: nothing at {config.model.init}")

    def __init__(self, config: MagStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        m, mem, ev = config.model, config.memory, config.eval
        model = WanDiT(m.backbone())
        if m.init is not None:
            file = m.init / WEIGHTS_NAME if m.init.is_dir() else m.init
            load_state_dict_checked(model, load_file(str(file)))
        for encoder in (model.action_encoder, model.pose_encoder):  # unused: MAG has none
            if encoder is not None:
                encoder.requires_grad_(False)
        self.model = dist.wrap(model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt, self.sched = build_optimizer(trainable, config.optim)
        text = get_text_encoder(mem.text_encoder, **mem.text_options)
        if text.dim != model.config.text_dim:
            raise ValueError(f"memory.text_encoder dim {text.dim} != model text_dim")
        self.empty = text.encode_empty(1)[0].to(dist.device)  # (1, L, D), MAG §3.3
        self.schedule = FewStepSchedule(mem.timesteps, mem.shift)
        frames = m.frames_per_block * mem.blocks_per_clip
        channels = model.config.in_channels
        self.dataset = latent_clips(config.data, frames, channels)
        self.eval_latents = None
        if ev.every:
            clips = latent_clips(config.data, ev.clip_frames, channels, seed=ev.seed)
            with torch.random.fork_rng(devices=[]):  # real clips draw their start
                torch.manual_seed(ev.seed)
                items = [clips[i % len(clips)] for i in range(ev.num_clips)]
            self.eval_latents = torch.stack(items).to(dist.device)  # (N, T, C, h, w)
        self.first_step: int | None = None  # first step this process trains

    def modules(self) -> dict[str, nn.Module]:
        """``{"memory": the memory model}`` (load with :func:`memory_model_from_run`)."""
        return {"memory": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"memory": AdamW}``."""
        return {"memory": self.opt}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """``{"memory": warm-up}``."""
        return {"memory": self.sched}

    def batches(self, start: int) -> Iterator[torch.Tensor]:
        """Clips ``(b, blocks_per_clip * frames_per_block, C, h, w)`` of clean latents."""
        return self.stream(self.dataset, self.config.data, start)

    def updates(self, step: int) -> tuple[str, ...]:
        """``("memory",)``; first runs the reconstruction eval when ``step`` is due."""
        every, first = self.config.eval.every, self.first_step is None
        self.first_step = step if first else self.first_step
        if every and step % every == 0 and not (first and self.logged_eval(step)):
            self.evaluate(step)
        return ("memory",)

    def logged_eval(self, step: int) -> bool:
        """Whether ``metrics.jsonl`` already holds the eval row of ``step`` (a resumed run
        starting where an earlier run evaluated); rank 0 reads, every rank gets the answer."""
        path = Path(self.config.trainer.run_dir) / METRICS
        found = False
        if self.dist.is_main and path.is_file():
            found = any(r["step"] == step and EVAL_MARK in r for r in read_metrics(path))
        return bool(self.dist.broadcast_object(found))

    def loss(self, update: str, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flow matching of the decoded block through its compressed cache (steps 1-3 of the
        module docstring); also logs ``x0_mse``. Shapes: batch ``(B, n b, C, h, w)``."""
        b, device = self.config.model.frames_per_block, self.dist.device
        x0 = rearrange(batch.to(device), "B (n k) c h w -> (B n) k c h w", k=b)  # (N, b, C, h, w)
        num = len(x0)
        noise = torch.randn_like(x0)
        times = torch.tensor(self.schedule.times)[torch.randint(self.schedule.num_steps, (num,))]
        starts = self.config.memory.max_start_frame // b  # block-aligned RoPE starts
        draws = num if self.config.memory.start_per_sample else 1
        offsets = (b * torch.randint(starts, (draws,))).expand(num).tolist()  # CPU: no sync
        preds, targets, x0_err = [], [], []
        for offset in sorted(set(offsets)):  # one forward pair per RoPE start
            rows = torch.tensor([i for i, o in enumerate(offsets) if o == offset])  # CPU
            idx = rows.to(device)
            block, eps, t = x0[idx], noise[idx], times[rows].to(device)  # (n, b, ...), (n,)
            context = self.empty.expand(len(idx), -1, -1)
            cache = compress_block(self.model, block, context, offset)  # with grad: the encoder
            x_t = noisy_sample(block, eps, t)
            v = self.model(x_t, t, context, cache=cache, frame_offset=offset)  # the decoder
            preds.append(v)
            targets.append(velocity_target(block, eps))
            x0_err.append((x0_from_velocity(x_t, v.detach(), t).float() - block).square())
        loss = flow_matching_loss(torch.cat(preds), torch.cat(targets))
        return {"loss": loss, "x0_mse": torch.cat(x0_err).mean()}

    def evaluate(self, step: int) -> dict[str, Any]:
        """:func:`reconstruction_quality` at every ``eval.block_sizes``; rank 0 appends the row
        to ``metrics.jsonl``. Uses its own RNG (training streams stay untouched)."""
        ev, model = self.config.eval, unwrap(self.model)
        row: dict[str, Any] = {"step": step, EVAL_MARK: list(ev.block_sizes)}
        for b in ev.block_sizes:
            quality = reconstruction_quality(
                model, self.eval_latents, b, empty_context=self.empty, schedule=self.schedule,
                seed=ev.seed,
            )  # fmt: skip
            row.update({f"eval/b{b}/{k}": v for k, v in quality.items()})
        if self.dist.is_main:
            with open(Path(self.config.trainer.run_dir) / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            shown = {b: round(row[f"eval/b{b}/psnr"], 2) for b in ev.block_sizes}
            logger.info("step %d reconstruction PSNR by block size: %s", step, shown)
        return row

    @classmethod
    def export_component(cls, run: Path) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
        """The run's memory model (:func:`memory_model_from_run`, not EMA) and the ``mag``
        policy's ``block_frames``: the ``b`` it was trained at (MAG's compression rate)."""
        model = memory_model_from_run(run)
        return model, {"mag": {"block_frames": model.config.attention.frames_per_block}}


def memory_model_from_run(
    path: str | Path, *, ema: bool = False, device: str | torch.device = "cpu"
) -> WanDiT:
    """The trained memory model of a ``mag`` run, frozen, for ``get_policy("mag", writer=...)``
    (a packaged world model stores it with ``reverie.memory.save_memory_model``).

    Args:
        path: run directory (newest checkpoint), checkpoint directory or ``memory.safetensors``.
        ema: load the EMA weights (``trainer.ema_modules: [memory]``).

    Raises:
        FileNotFoundError / ValueError: see ``stage_weights``; CheckpointKeyError: misfit.
    """
    tensors, config = stage_weights(path, "mag", "memory", ema=ema)
    model = WanDiT(from_dict(MagModelConfig, config["model"], "model").backbone())
    load_state_dict_checked(model, tensors)
    return model.to(device).eval().requires_grad_(False)
