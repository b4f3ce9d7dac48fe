"""3D rotary position embedding of Wan2.1 with absolute frame positions and temporal YaRN.

Wan splits every attention head's channels into a temporal, a height and a width part and rotates
each part by its own 1D RoPE (RoFormer, arXiv 2104.09864, eq 34; Wan2.1 `rope_apply`). For head
dim `d` the split is `(d - 4 (d // 6), 2 (d // 6), 2 (d // 6))` channels; channel pairs are
interleaved (`x[2i], x[2i + 1]` form one complex number), as in the reference code.

Positions are absolute: a token carries (latent frame, row, column) indices, so a block generated
at latent frame 40 is rotated as frame 40 whether it is computed alone (with a KV cache) or inside
a full sequence. RELIC §4.1.3 extends the teacher from 5 s to 20 s clips; `RopeConfig.time_scale`
stretches the temporal axis only, with YaRN's "NTK-by-parts" interpolation (arXiv 2309.00071,
§3.2, eq 17-18). `time_scale = 1` is Wan exactly. YaRN's attention temperature (§3.4) is not
applied: it would rescale the spatial channels as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Index of each axis in a position triple (latent frame, row, column).
TIME_AXIS, HEIGHT_AXIS, WIDTH_AXIS = 0, 1, 2
NUM_AXES = 3
# Wan gives each spatial axis 2 * (head_dim // 6) channels and the rest to time.
SPATIAL_CHANNEL_DIVISOR = 6


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings.

    Attributes:
        theta: RoPE base (Wan: 10000).
        time_scale: context-extension factor of the temporal axis (target / training length);
            1.0 reproduces Wan exactly. RELIC §4.1.3 goes from 5 s to 20 s, i.e. 4.0.
        time_original_frames: training context length in latent frames (Wan2.1: 81 video
            frames at 16 fps = 21 latent frames); YaRN's ramp is measured against it.
        yarn_alpha, yarn_beta: YaRN ramp bounds in rotations per training context (eq 17-18 of
            arXiv 2309.00071): frequencies that turn fewer than `alpha` times are interpolated
            by `1 / time_scale`, those that turn more than `beta` times are kept, linear between.
    """

    theta: float = 10000.0
    time_scale: float = 1.0
    time_original_frames: int = 21
    yarn_alpha: float = 1.0
    yarn_beta: float = 32.0

    def __post_init__(self) -> None:
        if self.time_scale < 1.0:
            raise ValueError(f"rope time_scale must be >= 1, got {self.time_scale}")
        if self.time_original_frames < 1:
            raise ValueError("rope time_original_frames must be >= 1")
        if not 0 < self.yarn_alpha < self.yarn_beta:
            raise ValueError("rope needs 0 < yarn_alpha < yarn_beta")


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels per head given to (time, height, width), as Wan splits them."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    spatial = 2 * (head_dim // SPATIAL_CHANNEL_DIVISOR)
    return head_dim - 2 * spatial, spatial, spatial


def axis_frequencies(dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Angular frequencies `theta^(-2i / dim)` of one axis.

    Shapes:
        returns `(dim // 2,)` float64, radians per position step.
    """
    exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim
    return 1.0 / (theta**exponent)


def yarn_frequencies(
    freqs: torch.Tensor, scale: float, original_length: int, alpha: float, beta: float
) -> torch.Tensor:
    """YaRN "NTK-by-parts" frequency interpolation (arXiv 2309.00071, §3.2, eq 17-18).

    `r = L / λ` counts how often a frequency turns within the training context `L`; the ramp
    `γ = clamp((r - α) / (β - α), 0, 1)` blends position interpolation (`θ / s`, for slow,
    "absolute" frequencies) with no change (fast, "relative" frequencies):
    `θ' = (1 - γ) θ / s + γ θ`. `scale == 1` returns `freqs` unchanged.

    Shapes:
        freqs: `(K,)` radians per step; returns `(K,)`, every entry `<=` the input.
    """
    if scale == 1.0:
        return freqs
    wavelength = 2 * math.pi / freqs  # (K,)
    rotations = original_length / wavelength  # (K,)
    ramp = ((rotations - alpha) / (beta - alpha)).clamp(0.0, 1.0)  # (K,)
    return freqs / scale * (1.0 - ramp) + freqs * ramp


class RotaryEmbedding3D:
    """Computes per-token cos/sin tables for Wan's 3D RoPE from (frame, row, column) positions.

    Holds no tensors (frequencies are rebuilt on the positions' device each call: a few dozen
    numbers), so the model has no RoPE buffers to move, save or materialise from `meta`.
    """

    def __init__(self, head_dim: int, config: RopeConfig) -> None:
        self.head_dim = head_dim
        self.config = config
        self.axis_dims = rope_axis_dims(head_dim)

    def __eq__(self, other: object) -> bool:
        """Equal when the tables are: same head size and config (a cache written with one
        model's RoPE is read correctly by another with an equal one)."""
        if not isinstance(other, RotaryEmbedding3D):
            return NotImplemented
        return (self.head_dim, self.config) == (other.head_dim, other.config)

    def __hash__(self) -> int:
        return hash((self.head_dim, self.config))

    def frequencies(self, device: torch.device | None = None) -> list[torch.Tensor]:
        """Per-axis frequencies `[(t_dim/2,), (h_dim/2,), (w_dim/2,)]` float64, time scaled."""
        cfg = self.config
        t_dim, h_dim, w_dim = self.axis_dims
        time = yarn_frequencies(
            axis_frequencies(t_dim, cfg.theta, device),
            cfg.time_scale,
            cfg.time_original_frames,
            cfg.yarn_alpha,
            cfg.yarn_beta,
        )
        return [
            time,
            axis_frequencies(h_dim, cfg.theta, device),
            axis_frequencies(w_dim, cfg.theta, device),
        ]

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of every token's rotation angles.

        Angles are formed in float64 (as Wan and diffusers do) and rounded to float32 once, so
        large frame indices keep their precision.

        Shapes:
            positions: `(N, 3)` (latent frame, row, column), any float/int dtype; fractional
                values are allowed (e.g. positions of spatially pooled tokens).
            returns `(cos, sin)`, each `(N, head_dim // 2)` float32.
        """
        pos = positions.to(torch.float64)  # (N, 3)
        angles = torch.cat(
            [torch.outer(pos[:, axis], f) for axis, f in enumerate(self.frequencies(pos.device))],
            dim=-1,
        )  # (N, head_dim // 2)
        return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs `(x[2i], x[2i+1])` by the angles behind `cos`/`sin`.

    Shapes:
        x: `(B, H, N, head_dim)`; cos, sin: `(N, head_dim // 2)`; returns x's shape and dtype.
    """
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (B, H, N, head_dim // 2) each
    rotated = torch.stack(
        [x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1
    )  # (B, H, N, head_dim // 2, 2)
    return rotated.flatten(-2).type_as(x)


def grid_positions(
    num_frames: int,
    height: int,
    width: int,
    frame_offset: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(frame, row, column) of every token of a `(T, h, w)` token grid, row-major.

    Shapes:
        returns `(T * h * w, 3)` float32; frames are `frame_offset .. frame_offset + T - 1`.
    """
    frames = torch.arange(frame_offset, frame_offset + num_frames, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    grid = torch.meshgrid(frames, rows, cols, indexing="ij")  # 3 x (T, h, w)
    return torch.stack(grid, dim=-1).reshape(-1, NUM_AXES).float()  # (T*h*w, 3)
