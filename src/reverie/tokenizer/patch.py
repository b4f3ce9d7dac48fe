"""`PatchTokenizer`: a fixed linear video tokenizer (whitened PCA of RGB patches) in Wan's layout.

    video (B, T, 3, H, W) in [-1, 1], T = 1 + 4k
      frame 0            -> p x p x 3 patches          -> (x - mu_0) @ E_0^T -> latent frame 0
      frames 4j-3 .. 4j  -> 4 x p x p x 3 patch tubes  -> (x - mu_1) @ E_1^T -> latent frame j
    latents (B, 1 + k, C_lat, H/p, W/p)  (then `(z - latents_mean) / latents_std` per channel)

**One latent space for both chunk kinds.** `fit_patch_tokenizer` derives the first-frame code
from the tube code: latent frame 0 is the tube encoding of frame 0 held still for 4 frames
(`E_0 x = E_1 [x; x; x; x]` up to the mean), and `D_0` is the minimum-MSE linear decoder of a
frame from that code (from the frames' covariance). A separate PCA of single frames would
reconstruct frame 0 about as well (36.5 vs 36.1 dB on our renders) but its channels 4-15 are
other directions than the tubes' (|corr| < 0.35 for several), and the DiT is trained on clips
that mostly start mid-episode with a tube latent: the start image of a stream would then be read
in channels the model has barely seen.

The layout is Wan2.1's causal one (Wan2.1 §3.1, RELIC §4.1): the first frame is encoded alone,
then groups of `temporal_factor` (4) frames, so streaming encode/decode is exact chunk by chunk
(no causal state beyond "is this the first chunk"). `E` and `D` are the top `C_lat` principal
directions of the training renders' patches, whitened (`E = diag(lambda)^-1/2 U^T`,
`D = U diag(lambda)^1/2`): the minimum-MSE linear code of that size (Eckart-Young), fitted in
seconds with `fit_patch_tokenizer` instead of hours of VAE training on a CPU. At `p = 4` a latent
frame is 16x16x16 for 64x64 video (12x compression of a 4-frame group); with the DiT patch
(1, 4, 4) that is still 16 tokens per latent frame, as with the 8x Wan VAE and patch (1, 2, 2).

Implements the tokenizer surface the engine and `reverie encode` use (`encode`, `decode`,
`start_encoding`, `start_decoding`, the `LatentDecoder` protocol), like `VideoVAE`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange
from torch import nn

from reverie.config_utils import from_dict, to_dict
from reverie.tokenizer.layout import (
    check_latent_stats,
    check_latents,
    check_video,
    join_pending,
    num_latent_frames,
)


@dataclass(frozen=True)
class PatchTokenizerConfig:
    """Shape and latent normalisation of the linear patch tokenizer.

    Attributes:
        kind: always "patch" (tells `load_vae` which tokenizer a `vae_config.json` describes).
        patch_size: pixels per latent pixel along H and W (`spatial_factor`).
        temporal_factor: video frames per latent frame after the first (Wan: 4).
        z_dim: latent channels `C_lat` (principal components kept per patch).
        in_channels: video channels (RGB: 3).
        latents_mean, latents_std: per-channel statistics applied after the projection (as in
            `VAEConfig`), or None for the identity.
    """

    kind: Literal["patch"] = "patch"
    patch_size: int = 4
    temporal_factor: int = 4
    z_dim: int = 16
    in_channels: int = 3
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if min(self.patch_size, self.temporal_factor, self.z_dim, self.in_channels) < 1:
            raise ValueError("patch_size, temporal_factor, z_dim and in_channels must be >= 1")
        if self.z_dim > self.first_features:
            raise ValueError(
                f"z_dim {self.z_dim} exceeds the {self.first_features} values of a first-frame "
                "patch"
            )
        check_latent_stats(self.latents_mean, self.latents_std, self.z_dim)

    @property
    def spatial_factor(self) -> int:
        return self.patch_size

    @property
    def first_features(self) -> int:
        """Values in one first-frame patch: `3 p^2`."""
        return self.in_channels * self.patch_size**2

    @property
    def group_features(self) -> int:
        """Values in one patch tube of `temporal_factor` frames: `4 * 3 p^2`."""
        return self.temporal_factor * self.first_features

    @property
    def latent_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.latents_mean is None:
            return (0.0,) * self.z_dim, (1.0,) * self.z_dim
        return self.latents_mean, self.latents_std

    def replace(self, **changes: Any) -> PatchTokenizerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchTokenizerConfig:
        """Strict inverse of `to_dict` (raises ValueError naming a bad key)."""
        return from_dict(cls, data, "PatchTokenizerConfig")


class PatchTokenizer(nn.Module):
    """Whitened-PCA patch tokenizer (module docstring); weights are fixed buffers.

    Buffers (float32): `first_mean (3p^2,)`, `first_encoder (C, 3p^2)`, `first_decoder (3p^2, C)`
    and the same for 4-frame tubes (`group_*`, `4 * 3p^2` features). A new tokenizer encodes
    with the identity basis truncated to `C` (use `fit_patch_tokenizer` to fit one).
    """

    # PCA bases lose ~0.5 dB in bf16 and weigh a few kB: always stored in float32.
    storage_dtype = torch.float32

    def __init__(self, config: PatchTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        c, f0, f1 = config.z_dim, config.first_features, config.group_features
        self.register_buffer("first_mean", torch.zeros(f0))
        self.register_buffer("first_encoder", torch.eye(c, f0))
        self.register_buffer("first_decoder", torch.eye(f0, c))
        self.register_buffer("group_mean", torch.zeros(f1))
        self.register_buffer("group_encoder", torch.eye(c, f1))
        self.register_buffer("group_decoder", torch.eye(f1, c))
        mean, std = config.latent_mean_std
        shape = (1, 1, c, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std).view(shape), persistent=False)

    # ------------------------------------------------------------------------- properties
    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    @property
    def spatial_factor(self) -> int:
        return self.config.patch_size

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def dtype(self) -> torch.dtype:
        return self.first_encoder.dtype

    def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """Shapes: `(B, T, 3, H, W)` -> `(B, 1 + (T - 1) / 4, C_lat, H / p, W / p)`."""
        batch, frames, _, height, width = video_shape
        s = self.spatial_factor
        t_lat = num_latent_frames(frames, self.temporal_factor)
        return (batch, t_lat, self.latent_channels, height // s, width // s)

    def with_latent_stats(self, mean: Iterable[float], std: Iterable[float]) -> PatchTokenizer:
        """A copy whose `encode` also standardises by these per-channel statistics."""
        out = PatchTokenizer(self.config.replace(latents_mean=tuple(mean), latents_std=tuple(std)))
        out.load_state_dict(self.state_dict())
        return out

    def set_bases(self, first: tuple[torch.Tensor, ...], group: tuple[torch.Tensor, ...]) -> None:
        """Install fitted `(mean, encoder, decoder)` triples (shapes as the buffers)."""
        with torch.no_grad():
            for prefix, triple in (("first", first), ("group", group)):
                for name, value in zip(("mean", "encoder", "decoder"), triple, strict=True):
                    getattr(self, f"{prefix}_{name}").copy_(value)

    def pixel_weights(self) -> torch.Tensor:
        """Pixel MSE per unit of squared error in each raw latent channel of a 4-frame tube:
        `||D_1[:, c]||^2 / (4 * 3 p^2)` (the PCA eigenvalue over the tube's values; the
        decoder's columns are orthogonal, so pixel MSE = `sum_c w_c dz_c^2` exactly).

        Shapes: returns `(C_lat,)` float32, descending for a fitted tokenizer.
        """
        return self.group_decoder.float().square().sum(0) / self.config.group_features

    # ----------------------------------------------------------------------- normalisation
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Shapes: `(B, T_lat, C_lat, h, w)` -> same: `(z - mean) / std` per channel."""
        return (z.float() - self.latents_mean) / self.latents_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`. Shapes: `(B, T_lat, C_lat, h, w)`, float32 out."""
        return latents.float() * self.latents_std + self.latents_mean

    # ----------------------------------------------------------------------- chunk codecs
    def encode_chunk(self, frames: torch.Tensor, first: bool) -> torch.Tensor:
        """Encode one chunk: the first frame alone (`first`) or a group of 4 frames.

        Shapes: frames `(B, 1 | 4, 3, H, W)` in [-1, 1] -> raw latents `(B, 1, C_lat, H/p, W/p)`
        float32 (before `normalize`).
        """
        p = self.spatial_factor
        mean, enc = (
            (self.first_mean, self.first_encoder)
            if first
            else (self.group_mean, self.group_encoder)
        )
        with torch.autocast(frames.device.type, enabled=False):
            x = rearrange(frames.float(), "b t c (h p) (w q) -> b h w (t c p q)", p=p, q=p)
            z = (x - mean) @ enc.T  # (B, h, w, C_lat)
        return rearrange(z, "b h w c -> b 1 c h w")

    def decode_frame(self, z: torch.Tensor, first: bool) -> torch.Tensor:
        """Decode one raw latent frame to 1 (`first`) or 4 video frames.

        Shapes: z `(B, 1, C_lat, h, w)` -> video `(B, 1 | 4, 3, p h, p w)` float32 in [-1, 1]
        (clamped).
        """
        p, c = self.spatial_factor, self.config.in_channels
        mean, dec = (
            (self.first_mean, self.first_decoder)
            if first
            else (self.group_mean, self.group_decoder)
        )
        with torch.autocast(z.device.type, enabled=False):
            x = rearrange(z.float(), "b 1 k h w -> b h w k") @ dec.T + mean  # (B, h, w, F)
            video = rearrange(x, "b h w (t c p q) -> b t c (h p) (w q)", c=c, p=p, q=p)
        return video.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------ encode/decode
    def check_video(self, video: torch.Tensor) -> None:
        """Raises ValueError on a bad rank, channels, size not divisible by `p`, NaN/Inf."""
        check_video(video, self.config.in_channels, self.spatial_factor)

    def encode(self, video: torch.Tensor, **_: Any) -> torch.Tensor:
        """Encode a clip to normalised latents (deterministic: `sample`/`generator` ignored).

        Shapes: video `(B, T, 3, H, W)` in [-1, 1], `T = 1 + 4k` ->
        `(B, 1 + k, C_lat, H/p, W/p)` float32.

        Raises:
            ValueError: see `check_video`, or `T` not `1 + 4k`.
        """
        self.check_video(video)
        num_latent_frames(video.shape[1], self.temporal_factor)
        return self.start_encoding().step(video)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Shapes: latents `(B, T_lat, C_lat, h, w)` -> video `(B, 1 + 4 (T_lat - 1), 3, ph, pw)`
        float32 in [-1, 1]. Raises ValueError on bad latents."""
        return self.start_decoding().step(latents)

    def start_decoding(self) -> PatchDecoderStream:
        return PatchDecoderStream(self)

    def start_encoding(self, **_: Any) -> PatchEncoderStream:
        return PatchEncoderStream(self)


class PatchDecoderStream:
    """Streaming decode: the first latent frame gives 1 video frame, later ones 4 each."""

    def __init__(self, tokenizer: PatchTokenizer) -> None:
        self.tokenizer = tokenizer
        self.num_decoded = 0

    def step(self, latents: torch.Tensor) -> torch.Tensor:
        """Shapes: `(B, n, C_lat, h, w)` normalised -> `(B, m, 3, H, W)`, `m = 1 + 4 (n - 1)` on
        the first call and `4 n` afterwards. Raises ValueError on bad latents or `n = 0`."""
        tok = self.tokenizer
        check_latents(latents, tok.latent_channels)
        if latents.shape[1] == 0:
            raise ValueError("step needs at least one latent frame")
        z = tok.denormalize(latents)
        frames = []
        for i in range(z.shape[1]):
            frames.append(tok.decode_frame(z[:, i : i + 1], first=self.num_decoded == 0))
            self.num_decoded += 1
        return torch.cat(frames, dim=1)


class PatchEncoderStream:
    """Streaming encode: frames are buffered until a chunk (1 frame, then 4) is complete."""

    def __init__(self, tokenizer: PatchTokenizer) -> None:
        self.tokenizer = tokenizer
        self.num_encoded = 0
        self.pending: torch.Tensor | None = None  # (B, p, 3, H, W) frames not yet encoded

    @property
    def num_pending(self) -> int:
        return 0 if self.pending is None else self.pending.shape[1]

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Shapes: frames `(B, n, 3, H, W)` in [-1, 1], any `n >= 0` -> normalised latents
        `(B, k, C_lat, H/p, W/p)` float32, `k >= 0`.

        Raises:
            ValueError: bad frames, or a batch/size change within the stream.
        """
        tok = self.tokenizer
        tok.check_video(frames)
        frames = join_pending(self.pending, frames)  # (B, p + n, 3, H, W)
        outputs, start = [], 0
        while True:
            size = 1 if self.num_encoded == 0 else tok.temporal_factor
            if frames.shape[1] - start < size:
                break
            chunk = frames[:, start : start + size]
            outputs.append(tok.encode_chunk(chunk, first=self.num_encoded == 0))
            self.num_encoded += 1
            start += size
        self.pending = frames[:, start:] if start < frames.shape[1] else None
        if not outputs:
            b, _, _, height, width = frames.shape
            s = tok.spatial_factor
            return frames.new_zeros((b, 0, tok.latent_channels, height // s, width // s)).float()
        return tok.normalize(torch.cat(outputs, dim=1))


# ------------------------------------------------------------------------------------ fitting
# Code directions a still frame excites below this fraction of the strongest one are not decoded
# (they carry float32 rounding of whitened null directions, not signal; real renders' weakest
# still-frame direction is far above it).
PINV_RTOL = 1e-4
EIGEN_FLOOR = 1e-6


class _Moments:
    """Running float64 sum and scatter of patch vectors (for the PCA covariance)."""

    def __init__(self, features: int) -> None:
        self.sum = torch.zeros(features, dtype=torch.float64)
        self.scatter = torch.zeros(features, features, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()  # (N, F)
        self.sum += x.sum(0)
        self.scatter += x.T @ x
        self.count += x.shape[0]

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(mean (F,), covariance (F, F))` float64."""
        mean = self.sum / self.count
        return mean, self.scatter / self.count - torch.outer(mean, mean)

    def pca(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(mean (F,), encoder (k, F), decoder (F, k), eigenvalues (F,) descending)`."""
        mean, cov = self.mean_cov()
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        # Floor far below real renders' 16th/1st ratio (~3e-3) that keeps float32 whitening of
        # null directions (rank-deficient data) within ~1e3 of the signal's.
        evals = evals.clamp_min(EIGEN_FLOOR * max(float(evals[0]), 1e-12))
        u, lam = evecs[:, :k], evals[:k]
        encoder = (u / lam.sqrt()).T  # (k, F): whitened projection
        decoder = u * lam.sqrt()  # (F, k)
        return mean.float(), encoder.float(), decoder.float(), evals.float()


def static_first_basis(
    frames: _Moments, group: tuple[torch.Tensor, torch.Tensor], temporal_factor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The first-frame code that shares the tube code's channels (module docstring).

    `E_0 = sum_t E_1[:, t]` (frame held still: the tube encoder's 4 per-frame blocks summed),
    `D_0 = Sigma E_0^T (E_0 Sigma E_0^T)^+` (minimum-MSE linear decoder, `Sigma` the frame
    patches' covariance), and the one mean `mu_0` that makes both `E_0 (x - mu_0) = E_1 ([x; x;
    x; x] - mu_1)` and `D_0 z + mu_0` the regression of `x` on `z`:
    `mu_0 = m - D_0 (E_0 m - E_1 mu_1)`, `m` the frames' mean.

    Shapes: group `(mean (4F,), encoder (C, 4F))` float32; returns `(mu_0 (F,), E_0 (C, F),
    D_0 (F, C))` float32 and the fraction of frame variance the decoder explains.
    """
    m, sigma = frames.mean_cov()  # (F,), (F, F) float64
    g_mean, g_enc = (x.double() for x in group)
    c = g_enc.shape[0]
    enc = g_enc.view(c, temporal_factor, -1).sum(1)  # (C, F): t is the outer feature axis
    gram = enc @ sigma @ enc.T  # (C, C); singular when the frames span < C directions
    dec = sigma @ enc.T @ torch.linalg.pinv(gram, rtol=PINV_RTOL, hermitian=True)  # (F, C)
    mean = m - dec @ (enc @ m - g_enc @ g_mean)
    explained = float(torch.trace(dec @ enc @ sigma) / torch.trace(sigma))
    return mean.float(), enc.float(), dec.float(), explained


def fit_patch_tokenizer(
    videos: Iterable[np.ndarray], config: PatchTokenizerConfig | None = None
) -> tuple[PatchTokenizer, dict[str, Any]]:
    """Fit the whitened PCA bases of a `PatchTokenizer` on rendered videos.

    Every aligned group of 4 frames (`1..4`, `5..8`, ... as the encoder chunks a clip starting
    at frame 0) contributes its patch tubes to the group basis (PCA); every frame contributes
    its `p x p` patches to the statistics of the first-frame code, which is derived from the
    group basis so both share one latent space (`static_first_basis`).

    Shapes: each video `(T, H, W, 3)` uint8, `H, W` divisible by `p`, `T >= 5`.

    Returns:
        `(tokenizer, report)`; report: frames and patches used, and the fraction of patch
        variance each code keeps (`first_explained`, `group_explained`).

    Raises:
        ValueError: no videos, a video too short or of a bad shape.
    """
    config = config or PatchTokenizerConfig()
    p, g = config.patch_size, config.temporal_factor
    first, group = _Moments(config.first_features), _Moments(config.group_features)
    frames_used = 0
    for i, video in enumerate(videos):
        if video.ndim != 4 or video.shape[-1] != config.in_channels or video.shape[0] < 1 + g:
            raise ValueError(
                f"video {i}: need (T >= {1 + g}, H, W, {config.in_channels}) uint8, got "
                f"{video.shape}"
            )
        x = torch.from_numpy(np.ascontiguousarray(video)).float() / 127.5 - 1.0  # (T, H, W, 3)
        x = rearrange(x, "t h w c -> t c h w")
        first.add(rearrange(x, "t c (h p) (w q) -> t h w (c p q)", p=p, q=p))
        groups = (x.shape[0] - 1) // g
        tubes = x[1 : 1 + g * groups]  # (groups * 4, 3, H, W)
        group.add(rearrange(tubes, "(n t) c (h p) (w q) -> n h w (t c p q)", t=g, p=p, q=p))
        frames_used += x.shape[0]
    if first.count == 0:
        raise ValueError("fit_patch_tokenizer needs at least one video")
    k = config.z_dim
    m1, e1, d1, ev1 = group.pca(k)
    m0, e0, d0, first_explained = static_first_basis(first, (m1, e1), g)
    tokenizer = PatchTokenizer(config)
    tokenizer.set_bases((m0, e0, d0), (m1, e1, d1))
    report = {
        "frames": frames_used,
        "first_patches": first.count,
        "group_patches": group.count,
        "first_explained": first_explained,
        "group_explained": float(ev1[:k].sum() / ev1.sum()),
    }
    return tokenizer, report
