"""Episodes on disk, the render job (atomic writes, resume) and the clip dataset."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reverie.camera import actions_to_poses, poses_to_actions
from reverie.camera.rotations import R_from_yaw_pitch_roll
from reverie.data import (
    Batch,
    ClipDataset,
    Episode,
    RenderConfig,
    read_episode,
    read_manifest,
    render_dataset,
    render_job,
    write_episode,
)
from reverie.data.transforms import palindrome_indices, sample_pivot
from reverie.data.video import read_mp4, write_mp4


def make_episode(T=24, size=32, seed=0) -> Episode:
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 8.0
    yaw = 0.4 * np.sin(t) + rng.uniform(-1, 1)
    R = R_from_yaw_pitch_roll(yaw, 0.1 * np.sin(0.5 * t), 0.02 * np.cos(t))
    P = np.stack([0.3 * t, 0.1 * np.sin(t), 1.5 + 0.05 * t], -1)
    actions, scale = poses_to_actions(R, P)
    frames = rng.integers(0, 255, (T, size, size, 3), dtype=np.uint8)
    frames[:, : size // 2] = (np.arange(T) * 10 % 255)[:, None, None, None]  # varies over time
    K = np.array([[20.0, 0, 16], [0, 20, 16], [0, 0, 1]])
    return Episode(
        frames=frames,
        R=R,
        P=P,
        actions=actions,
        action_scale=scale,
        K=K,
        fps=16.0,
        caption="A test room.",
        scene={"world": "test"},
        trajectory="random",
    )


def test_video_round_trip_is_near_lossless(tmp_path):
    frames = make_episode(T=10, size=64).frames
    frames[:] = frames[:, :1]  # smooth content compresses well; noise would not
    write_mp4(tmp_path / "v.mp4", frames, fps=16)
    back = read_mp4(tmp_path / "v.mp4")
    assert back.shape == frames.shape
    mse = np.mean((back.astype(float) - frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35


def test_episode_write_read_round_trip(tmp_path):
    ep = make_episode()
    write_episode(tmp_path / "e", ep)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    back = read_episode(tmp_path / "e")
    assert back.num_frames == ep.num_frames and back.caption == ep.caption
    np.testing.assert_allclose(back.R, ep.R, atol=1e-8)
    np.testing.assert_allclose(back.P, ep.P, atol=1e-8)
    np.testing.assert_array_equal(back.actions, ep.actions)
    R2, P2 = actions_to_poses(back.actions, back.action_scale, back.R[0], back.P[0])
    np.testing.assert_allclose(P2, ep.P, atol=1e-5)  # stored actions rebuild the path


def test_episode_mismatched_shapes_are_rejected():
    ep = make_episode()
    with pytest.raises(ValueError, match="actions"):
        Episode(**{**ep.__dict__, "actions": ep.actions[:-1]})
    with pytest.raises(ValueError, match="poses"):
        Episode(**{**ep.__dict__, "P": ep.P[:-1]})


@pytest.mark.parametrize(
    "victim, damage, match",
    [
        ("cameras.json", "{broken", "cameras.json"),
        ("actions.npy", "garbage", "actions.npy"),
        ("video.mp4", "not a video", "video.mp4"),
        ("caption.txt", None, "caption.txt"),
        ("scene.json", None, "scene.json"),
    ],
)
def test_corrupt_or_missing_files_name_the_file(tmp_path, victim, damage, match):
    write_episode(tmp_path / "e", make_episode())
    path = tmp_path / "e" / victim
    if damage is None:
        path.unlink()
    else:
        path.write_text(damage)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_episode(tmp_path / "e")


def test_truncated_video_is_detected(tmp_path):
    ep = make_episode(T=24)
    write_episode(tmp_path / "e", ep)
    write_mp4(tmp_path / "e" / "video.mp4", ep.frames[:20], fps=16)
    with pytest.raises(ValueError, match="20 frames"):
        read_episode(tmp_path / "e")


def test_failed_write_leaves_no_episode(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("reverie.data.episode.np.save", boom)
    with pytest.raises(RuntimeError):
        write_episode(tmp_path / "e", make_episode())
    assert list(tmp_path.iterdir()) == []


def test_palindrome_indices():
    for T in (3, 4, 9, 16):
        for p in range(int(np.ceil((T + 1) / 2)), T + 1):
            idx = palindrome_indices(T, p)
            assert len(idx) == T and idx.min() >= 0 and idx.max() == p - 1
            assert list(idx[:p]) == list(range(p))
            assert np.all(np.diff(idx[p - 1 :]) == -1)  # then straight back
    assert list(palindrome_indices(5, 3)) == [0, 1, 2, 1, 0]
    with pytest.raises(ValueError, match="pivot"):
        palindrome_indices(8, 3)
    rng = np.random.default_rng(0)
    pivots = {sample_pivot(16, rng) for _ in range(200)}
    assert min(pivots) >= 9 and max(pivots) == 16


def _fake_dataset(root, n=3, T=24):
    """A dataset directory in the render job's format, from synthetic episodes."""
    rows = []
    for i in range(n):
        ep = make_episode(T=T, seed=i)
        eid = render_job.episode_id(i)
        write_episode(root / "episodes" / eid, ep)
        rows.append({"id": eid, "index": i, "frames": T, "height": 32, "width": 32})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_clip_dataset_batches(tmp_path):
    _fake_dataset(tmp_path)
    torch.manual_seed(0)
    ds = ClipDataset(tmp_path, clip_frames=9, palindrome=0.0, clips_per_episode=2)
    assert len(ds) == 6
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=Batch.collate)
    b = next(iter(loader))
    assert b.frames.shape == (4, 9, 3, 32, 32) and b.frames.dtype == torch.float32
    assert -1.0 <= b.frames.min() and b.frames.max() <= 1.0
    assert b.R.shape == (4, 9, 3, 3) and b.P.shape == (4, 9, 3) and b.actions.shape == (4, 9, 13)
    assert len(b.caption) == 4 and b.to("cpu", torch.bfloat16).frames.dtype == torch.bfloat16
    # Clip actions are the episode's actions at the clip's frames.
    ep = read_episode(tmp_path / "episodes" / b.episode[0])
    s = int(b.start[0])
    np.testing.assert_allclose(b.actions[0].numpy(), ep.actions[s : s + 9], atol=1e-6)


def test_palindrome_clips_return_to_start(tmp_path):
    _fake_dataset(tmp_path, n=1)
    torch.manual_seed(1)
    ds = ClipDataset(tmp_path, clip_frames=15, palindrome=1.0)
    for _ in range(5):
        b = ds[0]
        p, T = int(b.pivot[0]), 15
        assert 8 <= p <= T
        if p < T:  # the reversed half revisits the forward half's poses and frames
            torch.testing.assert_close(b.P[0, p], b.P[0, p - 2])
            torch.testing.assert_close(b.frames[0, p], b.frames[0, p - 2])
            # and its actions undo the forward motion: integrating them rebuilds the poses
            ep = read_episode(tmp_path / "episodes" / b.episode[0])
            R, P = actions_to_poses(
                b.actions[0].numpy(),
                ep.action_scale,
                b.R[0, 0].double().numpy(),
                b.P[0, 0].double().numpy(),
            )
            np.testing.assert_allclose(P, b.P[0].numpy(), atol=1e-4)


def test_clip_dataset_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        ClipDataset(tmp_path, clip_frames=4)
    _fake_dataset(tmp_path, n=2, T=24)
    with pytest.raises(ValueError, match="shorter"):
        ClipDataset(tmp_path, clip_frames=25)
    with pytest.raises(ValueError, match="64x64"):
        ClipDataset(tmp_path, clip_frames=4, resolution=64)
    shutil.rmtree(tmp_path / "episodes" / "000001")
    ds = ClipDataset(tmp_path, clip_frames=4)
    with pytest.raises(FileNotFoundError, match="000001"):
        ds[1]


def test_manifest_ignores_partial_last_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"index": 0, "id": "000000"}\n{"index": 1, "i')
    assert [r["index"] for r in read_manifest(tmp_path)] == [0]
    (tmp_path / "manifest.jsonl").write_text('{"index": 0, "i\n{"index": 1}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_manifest(tmp_path)


def test_render_config_validation():
    for bad in (
        {"episodes": 0},
        {"seconds": -1},
        {"resolution": 50},
        {"fps": 0},
        {"world": "mars"},
        {"trajectory": "teleport"},
        {"seed": -3},
    ):
        with pytest.raises(ValueError):
            RenderConfig(**{"episodes": 1, "seconds": 1.0, **bad})


def test_render_resume_and_determinism(tmp_path):
    cfg = RenderConfig(episodes=3, seconds=1.0, resolution=32, trajectory="revisit")
    calls = []
    rows = render_dataset(cfg, tmp_path / "a", progress=False, on_episode=calls.append)
    assert [r["index"] for r in rows] == [0, 1, 2] and len(calls) == 3
    # An interrupted run: episode 1 was renamed into place but never listed, and a temp dir
    # of episode 2 was left behind.  Re-running renders exactly the unlisted episodes.
    lines = (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()
    kept = [json.loads(x) for x in lines if json.loads(x)["index"] == 0]
    (tmp_path / "a" / "manifest.jsonl").write_text(json.dumps(kept[0]) + "\n" + '{"ind')
    os.makedirs(tmp_path / "a" / "episodes" / ".tmp-000002-x")
    calls.clear()
    rows = render_dataset(cfg, tmp_path / "a", progress=False, on_episode=calls.append)
    assert sorted(r["index"] for r in calls) == [1, 2]
    assert [r["index"] for r in rows] == [0, 1, 2]
    # Same settings elsewhere, with two workers: identical poses (determinism by seed).
    render_dataset(cfg, tmp_path / "b", progress=False, workers=2)
    for i in range(3):
        a = read_episode(tmp_path / "a" / "episodes" / f"00000{i}")
        b = read_episode(tmp_path / "b" / "episodes" / f"00000{i}")
        np.testing.assert_array_equal(a.P, b.P)
        np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="other settings"):
        render_dataset(
            RenderConfig(episodes=3, seconds=2.0, resolution=32), tmp_path / "a", progress=False
        )
