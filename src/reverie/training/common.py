"""What several training stages share: the backbone, text and latent-clip settings, and reading
the checkpoints of other stages (STYLE §15: a stage imports only these core modules, never
another stage).

- configs: :class:`DiTModelConfig` (backbone preset + RoPE + initial weights), :class:`TextConfig`
  (frozen text encoder, caption dropout), :class:`LatentClipsConfig` (``LatentClipDataset``
  clips of a ``reverie encode`` directory);
- text: :func:`build_text_encoder`, :func:`encode_text`; conditioning: :func:`conditioning`;
- checks: :func:`check_latents`, :func:`check_same_backbone`;
- weights and checkpoints: :func:`load_init_weights`, :func:`resolve_checkpoint`,
  :func:`stored_stage_config`, :func:`load_teacher`, :func:`resolve_weights`,
  :func:`stage_weights`.

A stage reads another stage's checkpoint through the stage registry
(:func:`stored_stage_config`: the stored config as that stage's ``config_class``), so that no
stage imports another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from reverie.config_utils import from_dict
from reverie.models import AttentionConfig, RopeConfig, WanDiT, WanDiTConfig, get_preset
from reverie.models.checkpoints import CONFIG_NAME, WEIGHTS_NAME
from reverie.models.checkpoints import load_config as load_dit_config
from reverie.models.state_dicts import NEW_MODULE_PREFIXES, load_state_dict_checked
from reverie.text import TextEncoder, get_text_encoder
from reverie.training.checkpoint import latest_checkpoint, read_checkpoint_config
from reverie.training.latents import LatentClipDataset, read_index
from reverie.training.stage import get_stage


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
class LatentClipsConfig:
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


# ------------------------------------------------------------------------------------ helpers
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


def check_latents(data: LatentClipsConfig, model: WanDiTConfig) -> dict[str, Any]:
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


def stored_stage_config(stage: str, stored: dict[str, Any]) -> Any:
    """The experiment config dict a ``stage`` checkpoint stored, as that stage's
    ``config_class`` (from the stage registry: one stage reads another's checkpoints without
    importing it).

    Raises:
        ValueError: an unknown stage; keys or types that do not fit its config.
    """
    return from_dict(get_stage(stage).config_class, stored)


def load_teacher(path: str | Path, *, ema: bool = True) -> tuple[WanDiT, Any]:
    """Rebuild a trained teacher (CPU, fp32) from a ``teacher`` run or checkpoint directory,
    with its EMA weights when present and ``ema``; returns it with the run's
    ``TeacherStageConfig``.

    Raises:
        FileNotFoundError / ValueError: see :func:`resolve_checkpoint`.
    """
    ckpt, stored = resolve_checkpoint(path, "teacher")
    config = stored_stage_config("teacher", stored)
    model = WanDiT(config.backbone())
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


def resolve_weights(path: str | Path, stage: str) -> tuple[Path, WanDiTConfig | None]:
    """The weights file behind ``path`` and, for a training run, the backbone it trained.

    ``path``: a ``stage`` run or checkpoint directory (``<stage>.ema.safetensors`` when present,
    else ``<stage>.safetensors``), a ``save_checkpoint`` directory, or a ``.safetensors`` file.

    Raises:
        FileNotFoundError: no weights. ValueError: a checkpoint of another stage.
    """
    path = Path(path)
    if (path / "checkpoints").is_dir() or (path / "trainer_state.json").is_file():
        ckpt, stored = resolve_checkpoint(path, stage)
        file = ckpt / f"{stage}.ema.safetensors"
        file = file if file.is_file() else ckpt / f"{stage}.safetensors"
        return file, stored_stage_config(stage, stored).backbone()
    file = path / WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{stage}: no weights at {file}")
    return file, None


def stage_weights(
    path: str | Path, stage: str, module: str, *, ema: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the weights of ``module`` written by a training run of ``stage``.

    Args:
        path: a run directory (its newest checkpoint), a checkpoint directory, or a
            ``.safetensors`` file inside a checkpoint directory.
        ema: take ``<module>.ema.safetensors`` (needs ``trainer.ema_modules``).

    Returns:
        ``(state_dict, config)``: CPU tensors and the experiment config dict of the run.

    Raises:
        FileNotFoundError: no checkpoint, weights or ``config.json`` there.
        ValueError: the checkpoint belongs to another stage.
    """
    path = Path(path)
    if path.is_file():
        file, ckpt = path, path.parent
    else:
        ckpt = latest_checkpoint(path) or path
        file = ckpt / f"{module}{'.ema' if ema else ''}.safetensors"
    if not file.is_file() or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"no {stage} checkpoint with {file.name} and config.json at {path}")
    stored = json.loads((ckpt / "config.json").read_text())
    if stored["stage"] != stage:
        raise ValueError(f"{ckpt} is a {stored['stage']!r} checkpoint, not {stage!r}")
    return load_file(str(file)), stored["config"]
