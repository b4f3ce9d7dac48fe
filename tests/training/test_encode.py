"""``reverie encode`` (resumable latent shards) and ``LatentClipDataset`` (crops, palindrome in
latent space). Also holds the helpers the stage tests share: a synthetic rendered dataset and
its latents (a random tiny VAE, 32x32 frames -> 16 x 4 x 4 latents)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reverie.camera import actions_to_poses, poses_to_actions
from reverie.camera.rotations import R_from_yaw_pitch_roll
from reverie.cli import main
from reverie.data import Episode, write_episode
from reverie.tokenizer import VideoVAE, save_vae
from reverie.training import encode as encode_module
from reverie.training import latents as latents_module
from reverie.training.encode import encode_dataset, load_trained_vae
from reverie.training.latents import LatentClipDataset, read_index, read_items

CAPTIONS = ("a red room with a wooden floor", "a grey courtyard under a blue sky")


def write_dataset(root: Path, episodes: int = 2, frames: int = 21, size: int = 32) -> Path:
    """A rendered-dataset lookalike: smooth moving colour fields, a turning and moving camera."""
    rows = []
    for i in range(episodes):
        t = np.arange(frames) / 8.0
        R = R_from_yaw_pitch_roll(0.3 * np.sin(t + i), 0.1 * np.sin(0.5 * t), 0.0 * t)
        P = np.stack([0.2 * t, 0.05 * np.sin(t), 1.5 + 0 * t], -1)
        actions, scale = poses_to_actions(R, P)
        y, x = np.mgrid[0:size, 0:size] / size
        phase = (t[:, None, None] + x[None] + i) * np.pi
        frames_rgb = np.stack([np.sin(phase), np.cos(phase + y), np.sin(2 * y + 0 * phase)], -1)
        video = ((frames_rgb + 1) * 127.5).clip(0, 255).astype(np.uint8)  # (T, H, W, 3)
        K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1.0]])
        ep = Episode(video, R, P, actions, scale, K, 16.0, CAPTIONS[i % 2], {"world": "test"})
        eid = f"{i:06d}"
        write_episode(root / "episodes" / eid, ep)
        rows.append({"id": eid, "index": i, "frames": frames, "height": size, "width": size})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def random_vae(root: Path) -> Path:
    """A randomly initialised tiny VAE as a ``save_vae`` directory."""
    torch.manual_seed(0)
    return save_vae(VideoVAE.from_preset("tiny"), root)


def make_latents(root: Path, clip_frames: int = 17, episodes: int = 2, frames: int = 21) -> Path:
    """Dataset -> random tiny VAE -> ``reverie encode`` output (16 x 4 x 4 latents)."""
    data = write_dataset(root / "data", episodes, frames)
    encode_dataset(
        data, random_vae(root / "vae"), root / "latents", clip_frames=clip_frames, progress=False
    )
    return root / "latents"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), episodes=2, frames=18)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    return random_vae(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def encoded(dataset, vae_dir, tmp_path_factory) -> Path:
    """Default windows: one of 17 frames (5 latent frames) per episode."""
    out = tmp_path_factory.mktemp("encoded") / "lat"
    encode_dataset(dataset, vae_dir, out, progress=False)
    return out


def test_encode_writes_windows_stats_and_skips_done_shards(dataset, vae_dir, tmp_path, monkeypatch):
    out = tmp_path / "lat"
    index = encode_dataset(
        dataset, vae_dir, out, clip_frames=9, episodes_per_shard=1, progress=False
    )
    assert index["num_shards"] == 2 and sorted(index["shards"]) == [
        "shard_00000.safetensors",
        "shard_00001.safetensors",
    ]
    assert len(index["latent_mean"]) == len(index["latent_std"]) == 16
    items = read_items(out, read_index(out, "latents"))
    assert len(items) == 2 * 2  # 18 frames -> windows at 0 and 9 per episode
    path, meta = items[1]
    assert (meta["episode"], meta["start_frame"], meta["latent_frames"]) == ("000000", 9, 3)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor(f"{meta['key']}/latents").shape == (3, 16, 4, 4)
        assert f.get_tensor(f"{meta['key']}/actions").shape == (9, 13)
        assert f.get_tensor(f"{meta['key']}/R").shape == (9, 3, 3)
    # the window equals encoding those 9 frames alone
    from reverie.data import read_episode

    ep = read_episode(dataset / "episodes" / "000000")
    video = torch.from_numpy(ep.frames[9:18]).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    with safe_open(str(path), framework="pt") as f:
        stored = f.get_tensor(f"{meta['key']}/latents")
    torch.testing.assert_close(stored, load_trained_vae(vae_dir).vae.encode(video)[0].float())

    def must_not_run(*args):
        raise AssertionError("a done shard was encoded again")

    monkeypatch.setattr(encode_module, "_encode_group", must_not_run)
    again = encode_dataset(
        dataset, vae_dir, out, clip_frames=9, episodes_per_shard=1, progress=False
    )
    assert again["shards"] == index["shards"]


def test_interrupted_encode_never_lists_a_half_shard(dataset, vae_dir, tmp_path, monkeypatch):
    out, real_save = tmp_path / "lat", latents_module.save_file
    calls = {"n": 0}

    def crash_while_writing_second(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half a shard")
            raise OSError("disk full")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(latents_module, "save_file", crash_while_writing_second)
    with pytest.raises(OSError, match="disk full"):
        encode_dataset(dataset, vae_dir, out, clip_frames=9, episodes_per_shard=1, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert list(index["shards"]) == ["shard_00000.safetensors"] and "latent_mean" not in index
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard_00000.safetensors"]
    monkeypatch.setattr(latents_module, "save_file", real_save)
    assert (
        main(
            [
                "encode",
                "--data",
                str(dataset),
                "--vae",
                str(vae_dir),
                "--out",
                str(out),
                "--clip-frames",
                "9",
                "--episodes-per-shard",
                "1",
            ]
        )
        == 0
    )
    assert "latent_mean" in read_index(out, "latents")


def test_latent_clips_crop_and_reverse_in_latent_space(encoded):
    raw = LatentClipDataset(encoded, 5, normalize=False)
    assert raw.index["settings"]["clip_frames"] == 17 and len(raw) == 2
    torch.manual_seed(0)
    plain = raw[0]
    assert plain.latents.shape == (1, 5, 16, 4, 4) and plain.actions.shape == (1, 17, 13)
    assert plain.R.shape == (1, 17, 3, 3) and plain.P.shape == (1, 17, 3)
    torch.testing.assert_close(plain.R[0, 0], torch.eye(3))  # relative to the first frame
    pal = LatentClipDataset(encoded, 5, palindrome=1.0, normalize=False)
    for seed in range(6):
        torch.manual_seed(seed)
        clip = pal[1]
        p = int(clip.pivot)
        if p == 5:
            continue
        lat = clip.latents[0]
        for k in range(1, 5 - p + 1):  # the reversed half revisits earlier latent frames
            torch.testing.assert_close(lat[p - 1 + k], lat[p - 1 - k])
        # recomputed actions integrate back to the (relative) palindrome poses
        R, P = actions_to_poses(clip.actions[0].double().numpy(), float(clip.action_scale))
        np.testing.assert_allclose(P, clip.P[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(R, clip.R[0].numpy(), atol=1e-4)
        return
    pytest.fail("no palindrome with a pivot < T was drawn")


def test_latents_are_standardised_with_the_measured_statistics(encoded):
    ds = LatentClipDataset(encoded, 5)
    x = torch.cat([ds[i].latents for i in range(len(ds))])  # (2, 5, 16, 4, 4): every frame
    assert x.mean(dim=(0, 1, 3, 4)).abs().max() < 1e-4
    torch.testing.assert_close(x.std(dim=(0, 1, 3, 4), unbiased=False), torch.ones(16))


def test_bad_inputs_are_clear_errors(dataset, vae_dir, encoded, tmp_path):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        encode_dataset(dataset, vae_dir, tmp_path / "lat", clip_frames=8, progress=False)
    with pytest.raises(ValueError, match="other settings.*clip_frames"):
        encode_dataset(dataset, vae_dir, encoded, clip_frames=13, progress=False)
    with pytest.raises(ValueError, match="32x32 videos but 64x64"):
        LatentClipDataset(encoded, 2, resolution=64)
    with pytest.raises(ValueError, match="fewer than clip_latent_frames=6"):
        LatentClipDataset(encoded, 6)
    # a `vae` training checkpoint records its resolution: a 32x32 dataset is refused
    ckpt = tmp_path / "vae_run" / "checkpoints" / "step_00000001"
    ckpt.mkdir(parents=True)
    save_file(VideoVAE.from_preset("tiny").state_dict(), str(ckpt / "vae.safetensors"))
    stored = {"stage": "vae", "config": {"model": {"preset": "tiny"}, "data": {"resolution": 64}}}
    (ckpt / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="trained on 64x64"):
        encode_dataset(dataset, tmp_path / "vae_run", tmp_path / "lat2", progress=False)
    with pytest.raises(FileNotFoundError):
        encode_dataset(dataset, tmp_path / "nothing", tmp_path / "lat3", progress=False)
