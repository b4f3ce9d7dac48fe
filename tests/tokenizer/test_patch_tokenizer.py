"""`PatchTokenizer`: Wan's causal layout, exact streaming, PCA fitting, save/load, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reverie.tokenizer import (
    LatentDecoder,
    PatchTokenizer,
    PatchTokenizerConfig,
    fit_patch_tokenizer,
    load_vae,
    save_vae,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from test_encode import write_dataset  # noqa: E402  (the shared synthetic rendered dataset)


def low_rank_videos(n: int = 3, frames: int = 13, size: int = 16, seed: int = 0) -> list:
    """Videos of 4x4 patches drawn from 2 colours x constant tubes: far below 16 dimensions.

    Each 4x4 patch of a frame is one of a few flat colours, constant over each 4-frame group,
    so first-frame patches and tubes span 3 directions around their mean.
    """
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 30, 40], [20, 180, 90], [40, 60, 220], [250, 250, 250]])
    out = []
    for _ in range(n):
        cells = rng.integers(0, len(palette), (1 + (frames - 1) // 4, size // 4, size // 4))
        video = np.empty((frames, size, size, 3), np.uint8)
        for t in range(frames):
            g = 0 if t == 0 else 1 + (t - 1) // 4
            video[t] = np.kron(palette[cells[g]], np.ones((4, 4, 1))).astype(np.uint8)
        out.append(video)
    return out


def as_video(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float() / 127.5 - 1.0


def fitted(seed: int = 0) -> PatchTokenizer:
    tok, _ = fit_patch_tokenizer(low_rank_videos(seed=seed))
    return tok


def test_layout_and_protocol():
    tok = fitted()
    assert isinstance(tok, LatentDecoder)
    video = as_video(low_rank_videos(1, frames=9)[0])  # (1, 9, 3, 16, 16)
    z = tok.encode(video)
    assert z.shape == (1, 3, 16, 4, 4) == tok.latent_shape(tuple(video.shape))
    assert tok.decode(z).shape == video.shape
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        tok.encode(video[:, :8])
    with pytest.raises(ValueError, match="divisible"):
        tok.encode(video[..., :15])


def test_low_rank_data_reconstructs_exactly():
    """PCA keeps every direction of data whose patches span fewer than C dimensions."""
    tok = fitted()
    video = as_video(low_rank_videos(1, seed=5)[0])  # unseen combination of the same colours
    assert torch.allclose(tok.decode(tok.encode(video)), video, atol=1e-4)


def test_streaming_equals_full():
    tok = fitted()
    video = as_video(low_rank_videos(1, frames=13)[0])
    full = tok.encode(video)
    enc, parts = tok.start_encoding(), []
    for a, b in [(0, 2), (2, 3), (3, 9), (9, 13)]:  # chunks that straddle Wan's groups
        parts.append(enc.step(video[:, a:b]))
    assert enc.num_pending == 0
    assert torch.equal(torch.cat(parts, 1), full)
    dec = tok.start_decoding()
    streamed = torch.cat([dec.step(full[:, :1]), dec.step(full[:, 1:2]), dec.step(full[:, 2:])], 1)
    assert torch.equal(streamed, tok.decode(full))


def test_first_frame_shares_the_group_code():
    """Latent frame 0 is the tube code of frame 0 held still (one latent space), and its
    decoder still reconstructs the frame."""
    tok = fitted()
    frame = as_video(low_rank_videos(1, seed=5)[0])[:, :1]  # (1, 1, 3, 16, 16)
    z0 = tok.encode_chunk(frame, first=True)
    held = tok.encode_chunk(frame.repeat(1, 4, 1, 1, 1), first=False)
    assert torch.allclose(z0, held, atol=1e-3)  # float32 sums of 4 blocks vs one
    assert torch.allclose(tok.decode_frame(z0, first=True), frame, atol=1e-3)


def test_pixel_weights_give_the_decoded_mse():
    """sum_c w_c dz_c^2 over a tube's latent error == the decoded 4 frames' pixel MSE."""
    tok, _ = fit_patch_tokenizer(
        [np.random.default_rng(i).integers(0, 255, (9, 8, 8, 3), dtype=np.uint8) for i in range(8)]
    )
    z = torch.zeros(1, 1, 16, 2, 2)  # decodes to the mean tube: no clamping near it
    dz = torch.randn(1, 1, 16, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.01
    a, b = tok.decode_frame(z, first=False), tok.decode_frame(z + dz, first=False)
    mse = (a - b).square().mean()
    expected = (tok.pixel_weights()[:, None, None] * dz[0, 0].square()).sum() / 4  # per pixel
    assert torch.allclose(mse, expected, rtol=1e-3)


def test_whitened_latents_and_stats():
    """Fitted latents have ~unit variance per channel; `with_latent_stats` standardises."""
    videos = [as_video(v) for v in low_rank_videos(4, frames=21)]
    tok = fitted()
    z = torch.cat([tok.encode(v) for v in videos], 1)  # (1, T, C, h, w)
    # 4 flat colours span 3 directions (after the mean): whitened to ~1, the rest stays ~0
    top = z[:, 1:].transpose(0, 2).reshape(16, -1)  # (C, N)
    assert torch.allclose(top[:3].var(1), torch.ones(3), atol=0.35)
    assert top[3:].abs().max() < 1e-3
    mean, std = tuple(range(16)), tuple(1.0 + i for i in range(16))
    tok2 = tok.with_latent_stats(mean, std)
    m = torch.tensor(mean).view(1, 1, 16, 1, 1)
    s = torch.tensor(std).view(1, 1, 16, 1, 1)
    assert torch.allclose(tok2.encode(videos[0]), (tok.encode(videos[0]) - m) / s, atol=1e-5)
    assert torch.allclose(
        tok2.decode(tok2.encode(videos[0])), tok.decode(tok.encode(videos[0])), atol=1e-5
    )


def test_save_load_round_trip(tmp_path):
    tok = fitted().with_latent_stats([0.5] * 16, [2.0] * 16)
    save_vae(tok, tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "vae_config.json").read_text())["kind"] == "patch"
    back = load_vae(tmp_path / "tok", dtype=torch.bfloat16)
    assert isinstance(back, PatchTokenizer) and back.dtype == torch.float32  # bases stay fp32
    video = as_video(low_rank_videos(1)[0])
    assert torch.equal(back.encode(video), tok.encode(video))


def test_config_checks():
    with pytest.raises(ValueError, match="z_dim"):
        PatchTokenizerConfig(patch_size=2, z_dim=16)  # 12 values per first-frame patch
    with pytest.raises(ValueError, match="both"):
        PatchTokenizerConfig(latents_mean=(0.0,) * 16)
    with pytest.raises(ValueError, match="need"):
        fit_patch_tokenizer([np.zeros((3, 16, 16, 3), np.uint8)])


def test_fit_tokenizer_cli_then_encode(tmp_path, capsys):
    from reverie.cli import main
    from reverie.training.encode import encode_dataset

    data = write_dataset(tmp_path / "data", episodes=2, frames=21, size=32)
    assert main(["fit-tokenizer", "--data", str(data), "--out", str(tmp_path / "tok")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["episodes"] == 2 and 0.9 < line["group_explained"] <= 1.0
    index = encode_dataset(data, tmp_path / "tok", tmp_path / "lat", clip_frames=17, progress=False)
    assert index["settings"]["latent_shape"] == [16, 8, 8]
    from reverie.training.stages.student import pixel_loss_weights

    weights = pixel_loss_weights(tmp_path / "lat")  # the student's pixel loss weighting
    assert weights.shape == (16,) and abs(float(weights.mean()) - 1) < 1e-5
    assert weights[0] > weights[-1] > 0
    assert (
        main(["fit-tokenizer", "--data", str(data), "--out", str(tmp_path / "t2"), "--patch", "5"])
        == 2
    )


def test_fit_tokenizer_refuses_a_file_as_out(tmp_path):
    from reverie.cli import main

    data = write_dataset(tmp_path / "data", episodes=1, frames=9, size=32)
    (tmp_path / "f").write_text("x")
    assert main(["fit-tokenizer", "--data", str(data), "--out", str(tmp_path / "f")]) == 2
    assert (tmp_path / "f").read_text() == "x"
