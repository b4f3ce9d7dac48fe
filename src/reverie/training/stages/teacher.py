"""``teacher``: the bidirectional flow-matching world model on cached latent clips (RELIC §4.1).

    reverie train teacher --config configs/tiny/teacher.yaml data.latents=data/tiny-latents
    reverie train teacher --config configs/wan/teacher.yaml        # Wan2.1-1.3B, torchrun + FSDP

One step (Wan2.1 flow matching, Lipman et al. arXiv 2210.02747 eq. 23):

    1. latent clip x0 (B, T, C, h, w) with actions, poses (RELIC §4.1.2) and its caption;
       palindrome augmentation in latent space (RELIC §3.4, ``LatentClipDataset``)
    2. caption -> "" with probability ``text.dropout`` (classifier-free guidance training)
    3. t ~ shifted logit-normal or uniform (``time``), noise ~ N(0, I)
    4. x_t = (1 - t) x0 + t noise;  loss = MSE(v_θ(x_t, t | text, actions, poses), noise - x0)

Long clips: RELIC fine-tunes the teacher from 5 s to 20 s (§4.1.3; 20 s at 16 fps = 80 latent
frames). The tiny recipe trains on ``data.clip_latent_frames = 20`` (77 video frames, ~5 s,
320 tokens at 64x64), which a CPU steps through in ~2 s; raise it (and ``model.rope``'s
``time_scale``, YaRN) for long-clip fine-tuning. Text states come from a frozen encoder with
an LRU cache per caption (``reverie.text``).

The checkpoint's ``teacher.safetensors`` is a ``WanDiT`` state dict;
``reverie.training.common.load_teacher`` rebuilds the model from a run or checkpoint directory
for the ``ode``/``student``/``dmd`` stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reverie.diffusion import (
    TimeDistribution,
    TimeSamplingConfig,
    noisy_sample,
    sample_training_time,
    velocity_target,
)
from reverie.models import WanDiT, WanDiTConfig
from reverie.objectives import flow_matching_loss
from reverie.text import empty_text_dropout
from reverie.training.common import (
    DiTModelConfig,
    LatentClipsConfig,
    TextConfig,
    build_text_encoder,
    check_latents,
    conditioning,
    encode_text,
    load_init_weights,
)
from reverie.training.config import OptimConfig, TrainerConfig
from reverie.training.distributed import DistContext
from reverie.training.latents import LatentClip
from reverie.training.stage import SingleModuleStage, register_stage

# SD3's logit-normal (arXiv 2403.03206 §3.1) with a mild shift for 8x8-latent worlds.
TEACHER_TIME = TimeSamplingConfig(TimeDistribution.LOGIT_NORMAL, shift=2.0)


@dataclass(frozen=True)
class TeacherStageConfig:
    """Experiment config of the ``teacher`` stage."""

    trainer: TrainerConfig
    data: LatentClipsConfig
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    time: TimeSamplingConfig = TEACHER_TIME
    optim: OptimConfig = field(default_factory=OptimConfig)

    def backbone(self) -> WanDiTConfig:
        """The teacher's bidirectional ``WanDiTConfig``."""
        return self.model.backbone()


# ------------------------------------------------------------------------------------ the stage
@register_stage("teacher")
class TeacherStage(SingleModuleStage):
    """Bidirectional flow matching of a ``WanDiT``; one optimizer named ``teacher``."""

    key = "teacher"

    config_class = TeacherStageConfig

    @classmethod
    def check_config(cls, config: TeacherStageConfig, dist: DistContext) -> None:
        """Backbone, latents (:func:`check_latents`), ``model.init`` and batch split.

        Raises:
            ValueError / FileNotFoundError: naming the key.
        """
        try:
            backbone = config.model.backbone()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"model.preset/model.overrides: {e}") from e
        if config.data.batch_size % dist.world_size:
            raise ValueError(f"data.batch_size={config.data.batch_size} does not split over ranks")
        check_latents(config.data, backbone)
        if config.model.init is not None and not Path(config.model.init).exists():
            raise FileNotFoundError(f"model.init: nothing at {config.model.init}")

    def __init__(self, config: TeacherStageConfig, dist: DistContext) -> None:
        super().__init__(config, dist)
        model = WanDiT(config.model.backbone())
        if config.model.init is not None:
            load_init_weights(model, config.model.init)
        self.text = build_text_encoder(config.text, model.config.text_dim)
        self.teacher = self.train_module(dist.wrap(model, fsdp_units=model.blocks), config.optim)

    def batches(self, start: int) -> Iterator[LatentClip]:
        """``LatentClip`` micro-batches of ``data.batch_size / world_size`` clips."""
        data = self.config.data
        return self.stream(data.dataset(), data, start, collate_fn=LatentClip.collate)

    def loss(self, update: str, batch: LatentClip) -> dict[str, torch.Tensor]:
        """``{"loss": MSE(v, noise - x0)}`` (module docstring, steps 2-4); float32."""
        device = self.dist.device
        clip = batch.to(device)
        x0 = clip.latents  # (B, T, C, h, w)
        captions = empty_text_dropout(clip.caption, self.config.text.dropout)  # CPU RNG
        context = encode_text(self.text, captions, device)  # (B, L, D_text)
        noise = torch.randn_like(x0)
        t = sample_training_time((len(clip),), self.config.time, device=device)  # (B,)
        x_t = noisy_sample(x0, noise, t)
        v = self.teacher(x_t, t, context, **conditioning(clip))  # (B, T, C, h, w)
        return {"loss": flow_matching_loss(v, velocity_target(x0, noise))}

    def samples(self, batch: LatentClip) -> int:
        """Clips in the micro-batch."""
        return len(batch)
