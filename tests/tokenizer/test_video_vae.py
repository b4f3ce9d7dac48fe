"""VideoVAE: layout, normalisation, equality with diffusers, streaming == full, checks, I/O."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKLWan

from reverie.tokenizer import (
    DecoderStream,
    LatentDecoder,
    VAEConfig,
    VideoVAE,
    get_vae_config,
    load_vae,
    num_latent_frames,
    num_video_frames,
    save_vae,
)
from reverie.tokenizer.checkpoints import CONFIG_NAME

STREAM_TOLERANCE = 1e-5  # fp32, streaming vs one-shot
SIZE = 16  # pixels; 2x2 latents keep the tests fast


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(16, generator=generator).tolist()
    std = (torch.rand(16, generator=generator) + 0.5).tolist()
    config = get_vae_config("tiny", latents_mean=tuple(mean), latents_std=tuple(std))
    return VideoVAE(config).eval()


def _video(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, SIZE, SIZE, generator=generator) * 2 - 1


def _diffusers_decode(vae: VideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """Reference: diffusers' one-shot decode in its own layout."""
    z = vae.denormalize(latents).permute(0, 2, 1, 3, 4)  # (B, C, T, h, w)
    return vae.model.decode(z).sample.permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W)


def test_frame_counts() -> None:
    assert [num_latent_frames(t) for t in (1, 5, 33)] == [1, 2, 9]
    assert [num_video_frames(t) for t in (1, 2, 9)] == [1, 5, 33]
    for bad in (0, 2, 8, 32):
        with pytest.raises(ValueError, match="1 \\+ 4k"):
            num_latent_frames(bad)


@torch.no_grad()
def test_encode_decode_shapes_and_diffusers_equivalence(vae) -> None:
    video = _video(2, 9)
    latents = vae.encode(video)
    assert latents.shape == (2, 3, 16, SIZE // 8, SIZE // 8) == vae.latent_shape(video.shape)
    posterior = vae.model.encode(video.permute(0, 2, 1, 3, 4)).latent_dist
    expected = vae.normalize(posterior.mode().permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(latents, expected, rtol=0, atol=STREAM_TOLERANCE)
    decoded = vae.decode(latents)
    assert decoded.shape == video.shape
    assert decoded.min() >= -1 and decoded.max() <= 1
    torch.testing.assert_close(decoded, _diffusers_decode(vae, latents), rtol=0, atol=1e-5)


def test_normalisation_round_trip(vae) -> None:
    z = torch.randn(1, 2, 16, 2, 2)
    torch.testing.assert_close(vae.denormalize(vae.normalize(z)), z)
    mean, std = vae.config.latent_mean_std
    torch.testing.assert_close(vae.normalize(z)[0, 0, 3], (z[0, 0, 3] - mean[3]) / std[3])


@pytest.mark.parametrize(
    ("num_latents", "chunks"),
    [(1, [1]), (2, [1, 1]), (5, [1, 1, 1, 1, 1]), (5, [2, 3]), (6, [3, 1, 2])],
)
@torch.no_grad()
def test_streaming_decode_equals_full_decode(vae, num_latents, chunks) -> None:
    generator = torch.Generator().manual_seed(num_latents)
    latents = torch.randn(2, num_latents, 16, 2, 2, generator=generator)
    stream = vae.start_decoding()
    outputs, start = [], 0
    for size in chunks:
        out = stream.step(latents[:, start : start + size])
        expected_frames = num_video_frames(size) if start == 0 else 4 * size
        assert out.shape[1] == expected_frames
        outputs.append(out)
        start += size
    streamed = torch.cat(outputs, dim=1)
    assert stream.num_decoded == num_latents
    assert (streamed - _diffusers_decode(vae, latents)).abs().max() <= STREAM_TOLERANCE
    assert (streamed - vae.decode(latents)).abs().max() <= STREAM_TOLERANCE


@torch.no_grad()
def test_interleaved_streams_are_independent(vae) -> None:
    a, b = torch.randn(1, 3, 16, 2, 2), torch.randn(1, 3, 16, 2, 2)
    stream_a, stream_b = vae.start_decoding(), vae.start_decoding()
    out_a, out_b = [], []
    for i in range(3):
        out_a.append(stream_a.step(a[:, i : i + 1]))
        out_b.append(stream_b.step(b[:, i : i + 1]))
    torch.testing.assert_close(torch.cat(out_a, 1), vae.decode(a), rtol=0, atol=STREAM_TOLERANCE)
    torch.testing.assert_close(torch.cat(out_b, 1), vae.decode(b), rtol=0, atol=STREAM_TOLERANCE)


@torch.no_grad()
def test_streaming_encode_equals_full_encode(vae) -> None:
    video = _video(1, 13, seed=3)
    stream = vae.start_encoding()
    pieces = [stream.step(video[:, i : i + 3]) for i in range(0, 13, 3)]
    assert [p.shape[1] for p in pieces] == [1, 1, 1, 0, 1]  # frame 0, then groups of 4
    assert stream.num_pending == 0 and stream.num_encoded == 4
    streamed = torch.cat(pieces, dim=1)
    assert (streamed - vae.encode(video)).abs().max() <= STREAM_TOLERANCE


@torch.no_grad()
def test_posterior_sampling_is_seeded(vae) -> None:
    video = _video(1, 5)
    mean = vae.encode(video)
    one = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    two = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one, two)
    assert not torch.equal(one, mean)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 8, 3, SIZE, SIZE), "1 \\+ 4k"),
        ((1, 5, 4, SIZE, SIZE), "3 channels"),
        ((1, 5, SIZE, SIZE, 3), "3 channels"),
        ((1, 5, 3, 12, SIZE), "not divisible by 8"),
        ((5, 3, SIZE, SIZE), "\\(B, T, C, H, W\\)"),
    ],
)
def test_bad_video_raises(vae, shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        vae.encode(torch.zeros(shape))


def test_non_finite_input_raises(vae) -> None:
    video = _video(1, 5)
    video[0, 2, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        vae.encode(video)
    latents = torch.zeros(1, 2, 16, 2, 2)
    latents[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        vae.decode(latents)
    with pytest.raises(ValueError, match="16, h, w"):
        vae.decode(torch.zeros(1, 2, 4, 2, 2))


def test_stream_rejects_batch_change(vae) -> None:
    stream = vae.start_decoding()
    with torch.no_grad():
        stream.step(torch.zeros(2, 1, 16, 2, 2))
    with pytest.raises(ValueError, match="batch size changed"):
        stream.step(torch.zeros(1, 1, 16, 2, 2))


def test_protocols(vae) -> None:
    assert isinstance(vae, LatentDecoder)
    assert isinstance(vae.start_decoding(), DecoderStream)
    assert (vae.spatial_factor, vae.temporal_factor, vae.latent_channels) == (8, 4, 16)


def test_save_load_round_trip(vae, tmp_path) -> None:
    save_vae(vae, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.safetensors", "vae_config.json"]
    loaded = load_vae(tmp_path).eval()
    assert loaded.config == vae.config
    latents = torch.randn(1, 2, 16, 2, 2)
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents), vae.decode(latents))


def test_config_json_is_strict(tmp_path) -> None:
    config = get_vae_config("wan2.1")
    assert VAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        VAEConfig.from_dict({**config.to_dict(), "attn_scales": []})
    with pytest.raises(ValueError, match="num_res_blocks"):
        VAEConfig.from_dict({**config.to_dict(), "num_res_blocks": "2"})
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_vae(tmp_path)


def test_wan21_preset_matches_diffusers_default() -> None:
    """`wan2.1` == diffusers' AutoencoderKLWan defaults (the released Wan2.1 VAE), 127M params."""
    with torch.device("meta"):
        ours = VideoVAE.from_preset("wan2.1")
        reference = AutoencoderKLWan()
    public = {k: v for k, v in reference.config.items() if not k.startswith("_")}
    assert {k: ours.model.config[k] for k in public} == public
    count = sum(p.numel() for p in ours.model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert 126e6 < count < 128e6
    with torch.device("meta"):
        tiny = VideoVAE.from_preset("tiny")
    assert 2.5e6 < sum(p.numel() for p in tiny.parameters()) < 2.7e6


@torch.no_grad()
def test_loads_a_local_diffusers_vae(tmp_path) -> None:
    torch.manual_seed(0)
    source = AutoencoderKLWan(base_dim=16, num_res_blocks=1).eval()
    source.save_pretrained(tmp_path / "vae")
    vae = VideoVAE.from_diffusers_directory(tmp_path).eval()
    assert vae.config == get_vae_config("wan2.1", base_dim=16, num_res_blocks=1)
    latents = torch.randn(1, 2, 16, 2, 2)
    expected = source.decode(vae.denormalize(latents).permute(0, 2, 1, 3, 4)).sample
    assert torch.equal(vae.decode(latents), expected.permute(0, 2, 1, 3, 4))
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoVAE.from_diffusers_directory(tmp_path / "missing")


def test_unknown_preset() -> None:
    with pytest.raises(KeyError, match="known"):
        get_vae_config("huge")
