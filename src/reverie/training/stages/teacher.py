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

The checkpoint's ``teacher.safetensors`` is a ``WanDiT`` state dict; :func:`load_teacher`
rebuilds the model from a run or checkpoint directory for the ``ode``/``student``/``dmd`` stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from reverie.config_utils import from_dict
from reverie.diffusion import (
    TimeDistribution,
    TimeSamplingConfig,
    noisy_sample,
    sample_training_time,
    velocity_target,
)
from reverie.models import AttentionConfig, RopeConfig, WanDiT, WanDiTConfig, get_preset
from reverie.models.checkpoints import CONFIG_NAME, WEIGHTS_NAME
from reverie.models.checkpoints import load_config as load_dit_config
from reverie.models.state_dicts import NEW_MODULE_PREFIXES, load_state_dict_checked
from reverie.objectives import flow_matching_loss
from reverie.text import TextEncoder, empty_text_dropout, get_text_encoder
from reverie.training.checkpoint import latest_checkpoint, read_checkpoint_config
from reverie.training.config import OptimConfig, TrainerConfig
from reverie.training.distributed import DistContext
from reverie.training.latents import LatentClip, LatentClipDataset, read_index
from reverie.training.stage import SingleModuleStage, register_stage


@dataclass(frozen=True)
class DiTModelConfig:
    """The backbone: a ``reverie.models`` preset with ``overrides`` (``WanDiTConfig`` integer
    fields, e.g. ``num_layers``), the RoPE settings (``time_scale`` > 1: YaRN, RELIC §4.1.3)
    and optional initial weights ``init`` (a ``reverie.models.save_checkpoint`` directory or a
    ``.safetensors`` file, e.g. a converted Wan2.1; missing action/pose encoders stay zero)
    and the head's target ``prediction`` (``WanDiTConfig.prediction``: velocity or x0)."""

    preset: str = "tiny"
    overrides: dict[str, int] = field(default_factory=dict)
    rope: RopeConfig = field(default_factory=RopeConfig)
    init: Path | None = None
    prediction: str = "velocity"

    def backbone(self, attention: AttentionConfig | None = None) -> WanDiTConfig:
        """The ``WanDiTConfig`` with this attention (default bidirectional).

        Raises:
            KeyError: unknown preset. TypeError / ValueError: bad overrides.
        """
        config = get_preset(self.preset, **self.overrides, rope=self.rope)
        config = config.replace(prediction=self.prediction)
        return config if attention is None else config.replace(attention=attention)


@dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder (``reverie.text`` name and keyword arguments, e.g. umt5's
    ``path``) and the probability of replacing a caption by the empty prompt (CFG training)."""

    encoder: str = "minilm"
    options: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"text.dropout must be in [0, 1], got {self.dropout}")


@dataclass(frozen=True)
class LatentDataConfig:
    """Latent clips (``LatentClipDataset``) from a ``reverie encode`` directory.

    Attributes:
        latents: the encode output directory.
        resolution: pixel side the latents must come from.
        clip_latent_frames: latent frames per clip ``T`` (video frames ``1 + 4 (T - 1)``).
        palindrome: probability of palindrome augmentation (RELIC §3.4).
        clips_per_window: clips per encoded window per epoch.
        batch_size: global micro-batch size; seed: epoch order and crops; num_workers.
    """

    latents: Path
    resolution: int = 64
    clip_latent_frames: int = 20
    palindrome: float = 0.5
    clips_per_window: int = 8
    batch_size: int = 2
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if min(self.clip_latent_frames, self.clips_per_window, self.batch_size) < 1:
            raise ValueError("clip_latent_frames, clips_per_window and batch_size must be >= 1")

    def dataset(self, normalize: bool = True) -> LatentClipDataset:
        """The ``LatentClipDataset`` these settings describe."""
        return LatentClipDataset(
            self.latents,
            self.clip_latent_frames,
            palindrome=self.palindrome,
            clips_per_window=self.clips_per_window,
            normalize=normalize,
            resolution=self.resolution,
        )


# SD3's logit-normal (arXiv 2403.03206 §3.1) with a mild shift for 8x8-latent worlds.
TEACHER_TIME = TimeSamplingConfig(TimeDistribution.LOGIT_NORMAL, shift=2.0)


@dataclass(frozen=True)
class TeacherConfig:
    """Experiment config of the ``teacher`` stage."""

    trainer: TrainerConfig
    data: LatentDataConfig
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    time: TimeSamplingConfig = TEACHER_TIME
    optim: OptimConfig = field(default_factory=OptimConfig)


# ------------------------------------------------------------------ helpers shared by the stages
def build_text_encoder(config: TextConfig, text_dim: int) -> TextEncoder:
    """The configured frozen text encoder.

    Raises:
        ValueError: its state size differs from the model's ``text_dim``.
        TextEncoderUnavailableError: its package or local weights are missing.
    """
    encoder = get_text_encoder(config.encoder, **config.options)
    if encoder.dim != text_dim:
        raise ValueError(
            f"text.encoder {config.encoder!r} gives {encoder.dim}-d states, the model's "
            f"text_dim is {text_dim}"
        )
    return encoder


def encode_text(encoder: TextEncoder, captions: list[str], device: torch.device) -> torch.Tensor:
    """Text states of ``captions`` (zero-padded, cached per caption by the encoder).

    Shapes: returns ``(B, L, D)`` float32 on ``device``.
    """
    return encoder.encode(captions)[0].to(device)


def check_latents(data: LatentDataConfig, model: WanDiTConfig) -> dict[str, Any]:
    """Validate a latent directory against the data settings and the model before training.

    Returns: its ``index.json``.

    Raises:
        FileNotFoundError: no index. ValueError: another resolution, latent channels the model
        does not take, a latent size the patch does not divide, windows shorter than the clip,
        unfinished statistics.
    """
    index = read_index(data.latents, "latents")
    size = tuple(index["settings"]["resolution"])
    if size != (data.resolution, data.resolution):
        raise ValueError(
            f"data.latents {data.latents} were encoded from {size[0]}x{size[1]} videos, "
            f"data.resolution is {data.resolution}"
        )
    channels, h, w = index["settings"]["latent_shape"]
    if channels != model.in_channels or h % model.patch_size[1] or w % model.patch_size[2]:
        raise ValueError(
            f"latents ({channels}, {h}, {w}) do not fit the model (in_channels "
            f"{model.in_channels}, patch {model.patch_size})"
        )
    frames = 1 + (index["settings"]["clip_frames"] - 1) // 4
    if frames < data.clip_latent_frames:
        raise ValueError(
            f"data.clip_latent_frames={data.clip_latent_frames} > the {frames} latent frames of "
            f"the windows in {data.latents}"
        )
    if "latent_mean" not in index:
        raise ValueError(f"{data.latents}: encode has not finished (no latent statistics)")
    return index


def check_same_backbone(found: WanDiTConfig, wanted: WanDiTConfig, source: str) -> None:
    """Refuse weights of another architecture (attention mode and the head's prediction
    target may differ: a student may re-learn the head's target from a teacher's weights).

    Raises:
        ValueError: naming the differing fields with both values.
    """
    a = found.replace(attention=wanted.attention, prediction=wanted.prediction).to_dict()
    b = wanted.to_dict()
    diffs = [f"{k}: {a[k]!r} there, {b[k]!r} here" for k in b if a.get(k) != b[k]]
    if diffs:
        raise ValueError(f"{source} is another backbone ({'; '.join(diffs)})")


def load_init_weights(model: WanDiT, path: Path) -> None:
    """Load ``path`` (``save_checkpoint`` directory or ``.safetensors``) into ``model``; the
    action/pose encoders may be absent (zero-initialised, so a Wan2.1 model is unchanged).

    Raises:
        FileNotFoundError: nothing there. ValueError: weights of another architecture.
    """
    path = Path(path)
    file = path / WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"model.init: no weights at {file}")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        check_same_backbone(load_dit_config(path), model.config, f"model.init {path}")
    try:
        load_state_dict_checked(
            model, load_file(str(file)), allow_missing_prefixes=NEW_MODULE_PREFIXES
        )
    except KeyError as e:
        raise ValueError(f"model.init {file} does not fit the model: {e}") from e


def resolve_checkpoint(path: str | Path, stage: str) -> tuple[Path, dict[str, Any]]:
    """A run directory (its newest checkpoint) or a checkpoint directory of ``stage``.

    Returns: ``(checkpoint directory, its stored experiment config dict)``.

    Raises:
        FileNotFoundError: no checkpoint. ValueError: a checkpoint of another stage.
    """
    path = Path(path)
    ckpt = latest_checkpoint(path) if (path / "checkpoints").is_dir() else path
    if ckpt is None or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"no {stage} checkpoint at {path}")
    stored = read_checkpoint_config(ckpt)
    if stored["stage"] != stage:
        raise ValueError(f"{ckpt} is a checkpoint of stage {stored['stage']!r}, not {stage!r}")
    return ckpt, stored["config"]


def load_teacher(path: str | Path, *, ema: bool = True) -> tuple[WanDiT, TeacherConfig]:
    """Rebuild a trained teacher (CPU, fp32) from a ``teacher`` run or checkpoint directory,
    with its EMA weights when present and ``ema``.

    Raises:
        FileNotFoundError / ValueError: see :func:`resolve_checkpoint`.
    """
    ckpt, stored = resolve_checkpoint(path, "teacher")
    config = from_dict(TeacherConfig, stored)
    model = WanDiT(config.model.backbone())
    weights = ckpt / "teacher.ema.safetensors"
    if not (ema and weights.is_file()):
        weights = ckpt / "teacher.safetensors"
    load_state_dict_checked(model, load_file(str(weights)))
    return model, config


def conditioning(clip: Any) -> dict[str, Any]:
    """``WanDiT`` keyword arguments of a clip's actions and poses (RELIC §4.1.2).

    Shapes: ``actions (B, T_video, 13)``, ``poses = (R (B, T_video, 3, 3), P (B, T_video, 3))``.
    """
    return {"actions": clip.actions, "poses": (clip.R, clip.P)}


# ------------------------------------------------------------------------------------ the stage
@register_stage("teacher")
class TeacherStage(SingleModuleStage):
    """Bidirectional flow matching of a ``WanDiT``; one optimizer named ``teacher``."""

    key = "teacher"

    config_class = TeacherConfig

    @classmethod
    def check_config(cls, config: TeacherConfig, dist: DistContext) -> None:
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

    def __init__(self, config: TeacherConfig, dist: DistContext) -> None:
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
