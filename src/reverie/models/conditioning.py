"""Conditioning signals of the world model: flow time, camera actions and absolute camera poses.

- Flow time `t in [0, 1]` becomes Wan's sinusoidal embedding of `timestep = 1000 t` (the only
  place the 0-1000 scale appears).
- Actions and poses are per *video* frame; the Wan VAE compresses time 4x (`T_video = 1 + 4
  (T_lat - 1)`: video frame 0 is latent frame 0, then groups of 4), so both encoders group video
  frames the same way before their MLP (RELIC §4.1.2: "temporally downsampled 4x").
- Both encoders end in one **zero-initialised** projection per DiT block, so a model loaded from
  Wan starts out exactly unchanged (RELIC fine-tunes from Wan this way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

# Wan's checkpoints were trained on timesteps 1000 t (docs/conventions.md, compatibility edge).
WAN_TIMESTEP_SCALE = 1000.0
# Longest period of the sinusoidal timestep embedding (Transformer / DDPM convention).
SINUSOID_MAX_PERIOD = 10000.0
# The 13-DoF action vector of docs/conventions.md (RELIC §4.1.2).
NUM_ACTIONS = 13
# Per-frame pose features: 9 rotation entries + 3 camera-centre coordinates.
POSE_FEATURES = 12
# Pose Q/K conditioning emits two vectors per block: one added to Q, one to K.
POSE_QK_OUTPUTS = 2


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """`[cos(τ ω_i), sin(τ ω_i)]` with `ω_i = 10000^(-i / (dim/2))` (Wan `sinusoidal_embedding_1d`).

    Computed in float32 with the same operation order as diffusers' `Timesteps`, so converted
    checkpoints match diffusers bit for bit; Wan's reference computes it in float64 (differences
    ~1e-4 at τ ≈ 1000).

    Shapes:
        timesteps: `(M,)` Wan timesteps `τ = 1000 t` (float); returns `(M, dim)` float32.
    """
    half = dim // 2
    exponent = -math.log(SINUSOID_MAX_PERIOD) * torch.arange(
        half, dtype=torch.float32, device=timesteps.device
    )
    freqs = torch.exp(exponent / half)  # (half,)
    args = timesteps.float()[:, None] * freqs[None, :]  # (M, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (M, dim)


def group_video_frames(
    features: torch.Tensor, num_latent_frames: int, stride: int, starts_at_first_frame: bool
) -> torch.Tensor:
    """Group per-video-frame features by the latent frame that encodes them.

    The Wan VAE encodes video frame 0 alone into latent frame 0 and then every `stride` frames
    into one latent frame. For latent frame 0 we repeat frame 0's features `stride` times (as
    the causal VAE pads the first frame in time), so every group has `stride` entries.

    Shapes:
        features: `(B, T_video, F)`. If the chunk starts at latent frame 0 (`starts_at_first_frame`)
            `T_video = 1 + stride (T_lat - 1)`, otherwise `T_video = stride T_lat`.
        returns `(B, T_lat, stride * F)`, each group's frames in time order.

    Raises:
        ValueError: if `T_video` does not match `num_latent_frames`.
    """
    num_video = features.shape[1]
    expected = stride * num_latent_frames - (stride - 1) * starts_at_first_frame
    if num_video != expected:
        where = "starting at latent frame 0" if starts_at_first_frame else "after frame 0"
        raise ValueError(
            f"{num_latent_frames} latent frames {where} need {expected} video frames of "
            f"conditioning, got {num_video}"
        )
    if starts_at_first_frame:
        first = features[:, :1].expand(-1, stride - 1, -1)  # (B, stride - 1, F)
        features = torch.cat([first, features], dim=1)  # (B, stride * T_lat, F)
    return rearrange(features, "b (t s) f -> b t (s f)", s=stride)  # (B, T_lat, stride * F)


def pose_features(rotation: torch.Tensor, centre: torch.Tensor, translation_scale: float):
    """Absolute-pose parameterisation fed to the pose encoder: `[vec(R) | P / scale]`.

    `R` is the world-to-camera rotation (rows = camera axes in world coordinates), flattened
    row-major (9 numbers, already in [-1, 1]); `P` is the camera centre in metres divided by
    `translation_scale` so typical scene extents map to O(1). Poses are absolute in the clip's
    world frame; RELIC integrates them from actions starting at the first frame
    (`P_t = Σ R_i^T dP_i`, `R_t = Π dR_i`), so the first frame is usually the identity at the
    origin. This 12-d form is continuous in the pose (no Euler-angle wrap-around).

    Shapes:
        rotation: `(B, T, 3, 3)`; centre: `(B, T, 3)`; returns `(B, T, 12)`.
    """
    flat_rotation = rotation.flatten(-2)  # (B, T, 9)
    return torch.cat([flat_rotation, centre / translation_scale], dim=-1)  # (B, T, 12)


@dataclass(frozen=True)
class ActionEncoderConfig:
    """Relative-action encoder (RELIC §4.1.2).

    Attributes:
        action_dim: per-frame action vector size (13-DoF, docs/conventions.md).
        hidden_dim: width of the shared MLP and input of each block's projection.
    """

    action_dim: int = NUM_ACTIONS
    hidden_dim: int = 256


@dataclass(frozen=True)
class PoseEncoderConfig:
    """Absolute-pose encoder (RELIC §4.1.2).

    Attributes:
        hidden_dim: width of the shared MLP and input of each block's Q/K projection.
        translation_scale: metres that map to 1 in the pose features (`pose_features`).
    """

    hidden_dim: int = 256
    translation_scale: float = 1.0


class FrameConditionEncoder(nn.Module):
    """Per-video-frame features -> grouped per latent frame -> MLP -> per-block projections.

    `proj[i]` is block i's output layer; `WanDiT.init_weights` zero-initialises it.
    """

    def __init__(
        self,
        features: int,
        hidden_dim: int,
        stride: int,
        dim: int,
        num_layers: int,
        outputs_per_layer: int,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.mlp = nn.Sequential(
            nn.Linear(stride * features, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.proj = nn.ModuleList(
            nn.Linear(hidden_dim, outputs_per_layer * dim) for _ in range(num_layers)
        )

    def embed(
        self, features: torch.Tensor, num_latent_frames: int, starts_at_first_frame: bool
    ) -> torch.Tensor:
        """Shapes: features `(B, T_video, F)` -> `(B, T_lat, hidden_dim)`."""
        dtype = self.mlp[0].weight.dtype
        grouped = group_video_frames(
            features.to(dtype), num_latent_frames, self.stride, starts_at_first_frame
        )  # (B, T_lat, stride * F)
        return self.mlp(grouped)  # (B, T_lat, hidden_dim)


class ActionEncoder(FrameConditionEncoder):
    """Actions `(B, T_video, 13)` -> per-block additions to the hidden states after
    self-attention (RELIC §4.1.2)."""

    def __init__(self, config: ActionEncoderConfig, stride: int, dim: int, num_layers: int):
        super().__init__(config.action_dim, config.hidden_dim, stride, dim, num_layers, 1)

    def forward(
        self, actions: torch.Tensor, num_latent_frames: int, starts_at_first_frame: bool
    ) -> torch.Tensor:
        """Shapes: actions `(B, T_video, 13)` (see `group_video_frames` for T_video) ->
        `(B, T_lat, hidden_dim)`; block i adds `proj[i]` of it, `(B, T_lat, D)`."""
        return self.embed(actions, num_latent_frames, starts_at_first_frame)


class PoseEncoder(FrameConditionEncoder):
    """Absolute camera poses -> per-block additions to Q and K (RELIC §4.1.2).

    Parameterisation: `pose_features` (12 numbers per video frame: row-major world-to-camera
    rotation and camera centre / `translation_scale`), grouped 4 video frames per latent frame
    like the actions (48 inputs), then MLP; block i's `proj[i]` emits `[q_add | k_add]`.
    """

    def __init__(self, config: PoseEncoderConfig, stride: int, dim: int, num_layers: int):
        super().__init__(POSE_FEATURES, config.hidden_dim, stride, dim, num_layers, POSE_QK_OUTPUTS)
        self.translation_scale = config.translation_scale

    def forward(
        self,
        rotation: torch.Tensor,
        centre: torch.Tensor,
        num_latent_frames: int,
        starts_at_first_frame: bool,
    ) -> torch.Tensor:
        """Shapes: rotation `(B, T_video, 3, 3)` world-to-camera, centre `(B, T_video, 3)`
        metres -> `(B, T_lat, hidden_dim)`."""
        features = pose_features(rotation, centre, self.translation_scale)  # (B, T_video, 12)
        return self.embed(features, num_latent_frames, starts_at_first_frame)

    def layer_qk(self, layer: int, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes: embedding `(B, T_lat, hidden)` -> `(q_add, k_add)`, each `(B, T_lat, D)`."""
        q_add, k_add = self.proj[layer](embedding).chunk(POSE_QK_OUTPUTS, dim=-1)
        return q_add, k_add
