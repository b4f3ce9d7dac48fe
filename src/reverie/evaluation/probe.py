"""Pose probe: a small CNN that regresses the relative camera pose between two frames.

RELIC (arXiv 2512.04040 §5.3) measures action accuracy by recovering the camera trajectory from
generated video and comparing it with the commanded one. RELIC does not say which estimator it
uses; on 64x64 synthetic frames an off-the-shelf SfM / SLAM system has too few pixels to work
with, so we train a probe on ground-truth renders of the *training* scenes instead:

- **input**: two frames ``stride`` video frames apart (default 4 = one latent step), as
  9 channels ``[a, b, b - a]`` in [-1, 1];
- **output**: the pose of the second camera in the first camera's frame (docs/conventions.md):
  translation ``dP = R_a (P_b - P_a)`` in metres (x right, y down, z forward) and the rotation
  ``dR = R_b R_a^T`` as a rotation vector in degrees; 6 numbers, standardised by the training
  targets' mean and std (stored in the config);
- **trajectory**: chaining the predictions of consecutive pairs, ``P_{j+1} = P_j + R_j^T dP``,
  ``R_{j+1} = dR R_j`` (RELIC §4.1.2's pose integration), gives one pose per ``stride`` frames.

Architecture: four stride-2 3x3 convolutions (GroupNorm, SiLU) to 4x4, a 1x1 reduction and
two linear layers, about 0.33 M parameters (1.3 MB in float32). Trained with a smooth-L1 loss;
each pair is also shown reversed (``(b, a)`` with the inverse pose), so backward motion is as
common as forward.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from reverie.io import atomic_write_json, save_safetensors

PROBE_WEIGHTS = "probe.safetensors"
PROBE_CONFIG = "probe.json"


@dataclass(frozen=True)
class PoseProbeConfig:
    """Shape and target statistics of a pose probe.

    Attributes:
        resolution: square input side in pixels (multiple of 16).
        stride: video frames between the two input frames.
        channels: output channels of the four stride-2 convolutions.
        reduce: channels after the 1x1 reduction at the lowest resolution.
        hidden: width of the hidden linear layer.
        target_mean, target_std: per-dimension statistics of the 6 targets
            ``(dP metres (3), rotation vector degrees (3))`` used to standardise them.
    """

    resolution: int = 64
    stride: int = 4
    channels: tuple[int, int, int, int] = (32, 64, 96, 128)
    reduce: int = 64
    hidden: int = 128
    target_mean: tuple[float, ...] = field(default=(0.0,) * 6)
    target_std: tuple[float, ...] = field(default=(1.0,) * 6)

    def __post_init__(self) -> None:
        if self.resolution < 16 or self.resolution % 16:
            raise ValueError(f"resolution must be a multiple of 16, got {self.resolution}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if len(self.channels) != 4 or len(self.target_mean) != 6 or len(self.target_std) != 6:
            raise ValueError("need 4 channels and 6 target means / stds")
        if min(self.target_std) <= 0:
            raise ValueError(f"target_std must be > 0, got {self.target_std}")


class PoseProbe(nn.Module):
    """Relative pose regressor (see the module docstring).

    Shapes:
        forward: a, b ``(B, 3, H, W)`` float in [-1, 1] -> ``(B, 6)`` standardised targets.
    """

    def __init__(self, config: PoseProbeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 9
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        layers += [nn.Conv2d(c_in, config.reduce, 1), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        side = config.resolution // 16
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.reduce * side * side, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, 6),
        )
        self.register_buffer("mean", torch.tensor(config.target_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config.target_std, dtype=torch.float32))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b, b - a], dim=1)  # (B, 9, H, W)
        return self.head(self.features(x))  # (B, 6)

    @torch.no_grad()
    def predict(self, a: np.ndarray, b: np.ndarray, batch: int = 256) -> np.ndarray:
        """Relative poses ``(dP metres, rotation vector degrees)`` of frame pairs.

        Shapes: a, b ``(N, H, W, 3)`` uint8 -> ``(N, 6)`` float64.
        Raises ValueError on the wrong resolution or mismatched shapes.
        """
        res = self.config.resolution
        if a.shape != b.shape or a.ndim != 4 or a.shape[1:] != (res, res, 3):
            raise ValueError(f"expected two (N, {res}, {res}, 3) uint8 arrays, got {a.shape}")
        self.eval()
        out = []
        for i in range(0, len(a), batch):
            z = self(to_input(a[i : i + batch]), to_input(b[i : i + batch]))  # (n, 6)
            out.append((z * self.std + self.mean).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 6))


def to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return x.float().div(127.5).sub(1.0)


def relative_pose_targets(R: np.ndarray, P: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pose of camera ``j`` in camera ``i``'s frame, as probe targets.

    Shapes: R (T, 3, 3), P (T, 3) metres, i, j (N,) int -> (N, 6): ``dP`` metres (3) and the
    rotation vector of ``dR = R_j R_i^T`` in degrees (3).
    """
    dP = np.einsum("nab,nb->na", R[i], P[j] - P[i])  # (N, 3) camera frame of i
    dR = R[j] @ np.transpose(R[i], (0, 2, 1))  # (N, 3, 3)
    rv = Rotation.from_matrix(dR).as_rotvec(degrees=True)  # (N, 3)
    return np.concatenate([dP, rv], axis=1)


def chain_poses(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integrate relative poses into a trajectory starting at ``R = I``, ``P = 0``.

    ``P_{k+1} = P_k + R_k^T dP_k``, ``R_{k+1} = dR_k R_k`` (RELIC §4.1.2 pose integration).

    Shapes: rel (K, 6) as returned by :meth:`PoseProbe.predict` -> R (K+1, 3, 3), P (K+1, 3).
    """
    dR = Rotation.from_rotvec(rel[:, 3:], degrees=True).as_matrix()  # (K, 3, 3)
    R = [np.eye(3)]
    P = [np.zeros(3)]
    for k in range(len(rel)):
        P.append(P[-1] + R[-1].T @ rel[k, :3])
        R.append(dR[k] @ R[-1])
    return np.stack(R), np.stack(P)


def recover_trajectory(probe: PoseProbe, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera trajectory of a video at every ``stride``-th frame, from the probe.

    Shapes: frames (T, H, W, 3) uint8 -> R (K+1, 3, 3), P (K+1, 3) for frames
    ``0, s, 2s, ..., K s`` with ``K = (T - 1) // s`` (relative to frame 0, arbitrary scale).
    """
    s = probe.config.stride
    keep = frames[::s][: (len(frames) - 1) // s + 1]  # (K+1, H, W, 3)
    return chain_poses(probe.predict(keep[:-1], keep[1:]))


def save_probe(probe: PoseProbe, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``probe.safetensors`` + ``probe.json`` (config and ``extra`` facts) atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_safetensors(d / PROBE_WEIGHTS, probe.state_dict())
    atomic_write_json(d / PROBE_CONFIG, {"config": asdict(probe.config), **(extra or {})})
    return d


def load_probe(directory: str | os.PathLike) -> PoseProbe:
    """Load a probe written by :func:`save_probe` (float32, eval mode).

    Raises:
        FileNotFoundError: the directory lacks ``probe.json`` or ``probe.safetensors``.
        ValueError: a corrupt config.
    """
    from safetensors.torch import load_file

    d = Path(directory)
    for name in (PROBE_CONFIG, PROBE_WEIGHTS):
        if not (d / name).is_file():
            raise FileNotFoundError(
                f"{d / name} is missing: --probe must be a directory written by "
                "`reverie eval train-probe`"
            )
    try:
        raw = json.loads((d / PROBE_CONFIG).read_text())["config"]
        cfg = PoseProbeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt probe config {d / PROBE_CONFIG}: {e}") from e
    probe = PoseProbe(cfg)
    probe.load_state_dict(load_file(d / PROBE_WEIGHTS))
    return probe.eval()
