"""The streaming engine: `WorldModel` / `Session` on an untrained tiny model (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reverie.camera.actions import ACTION_INDEX, names_to_action
from reverie.engine import WorldModel, load_image
from reverie.memory import policy_names


@pytest.fixture(scope="module")
def model() -> WorldModel:
    torch.set_num_threads(1)
    return WorldModel.random(seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_step_shapes_and_counters(model, image):
    session = model.start(image, "a red room", memory="full")
    assert session.first_frame.shape == (64, 64, 3) and session.first_frame.dtype == np.uint8
    frames = session.step({"dolly_in", "pan_left"})
    assert frames.shape == (model.frames_per_step, 64, 64, 3) and frames.dtype == np.uint8
    stats = session.stats()
    assert stats["frames"] == 1 + model.frames_per_step
    assert stats["latent_frames"] == 1 + model.frames_per_block
    assert stats["cache_tokens"] == 16 * stats["latent_frames"]  # 8x8 latents, 2x2 patches
    assert stats["cache_bytes"] > 0 and stats["memory_policy"] == "full"


def test_same_seed_same_video_other_seed_differs(model, image):
    a = model.start(image, "x", seed=3).step({"dolly_in"})
    b = model.start(image, "x", seed=3).step({"dolly_in"})
    c = model.start(image, "x", seed=4).step({"dolly_in"})
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 0.5


def test_actions_change_the_frames(model, image):
    forward = model.start(image, "x", seed=1).step({"dolly_in"})
    turn = model.start(image, "x", seed=1).step({"pan_right"})
    assert np.abs(forward.astype(int) - turn).mean() > 0.1


def test_action_forms_agree(model, image):
    held = names_to_action({"truck_left"})
    by_name = model.start(image, seed=2).step({"truck_left"})
    by_vector = model.start(image, seed=2).step(held)
    by_rows = model.start(image, seed=2).step(np.tile(held, (model.frames_per_step, 1)))
    np.testing.assert_array_equal(by_name, by_vector)
    np.testing.assert_array_equal(by_name, by_rows)


@pytest.mark.parametrize(
    "bad",
    [
        {"fly"},
        {"dolly_in", "dolly_out"},
        np.full(13, np.nan, np.float32),
        np.zeros((3, 13), np.float32),
        -names_to_action({"dolly_in"}),
    ],
)
def test_bad_actions_raise_and_leave_the_session_unchanged(model, image, bad):
    session = model.start(image)
    before = session.stats()
    with pytest.raises(ValueError):
        session.step(bad)
    assert session.stats() == before
    assert session.step({"static"}).shape[0] == model.frames_per_step


def test_poses_follow_actions_and_gamma(model, image):
    gamma = 2.0
    session = model.start(image, gamma=gamma)
    for _ in range(2):
        session.step({"dolly_in"})
    R, P = session.poses
    frames = 2 * model.frames_per_step
    np.testing.assert_allclose(R[-1], np.eye(3), atol=1e-12)
    expected = frames * gamma * model.config.metres_per_unit  # camera +z is forward
    np.testing.assert_allclose(P[-1], [0.0, 0.0, expected], atol=1e-9)
    session.step({"pan_left"})
    R, _ = session.poses
    yaw = np.degrees(np.arctan2(R[-1][0, 2], R[-1][0, 0]))
    assert abs(abs(yaw) - 2.0 * model.frames_per_step) < 1e-6  # 2 degrees per frame


def test_observe_writes_context(model, image):
    session = model.start(image, memory="full")
    step = model.frames_per_step
    frames = np.repeat(image[None], 2 * step, axis=0)
    actions = np.tile(names_to_action({"static"}), (2 * step, 1))
    recon = session.observe(frames, actions)
    assert recon.shape == frames.shape
    assert session.stats()["latent_frames"] == 1 + 2 * model.frames_per_block
    assert session.stats()["generated_frames"] == 0
    with pytest.raises(ValueError, match="multiple"):
        session.observe(frames[:3], actions[:3])
    with pytest.raises(ValueError, match="actions"):
        session.observe(frames, actions[:-1])


@pytest.mark.parametrize("memory", policy_names())
def test_every_memory_policy_streams(model, image, memory):
    session = model.start(image, "a hall", memory=memory)
    for _ in range(9):
        session.step({"pan_left"})
    stats = session.stats()
    assert stats["memory_policy"] == memory and stats["latent_frames"] == 10
    bound = session.policy.max_frames
    if bound is not None:
        assert stats["cache_frames"] <= bound + model.frames_per_block


def test_unknown_policy_and_bad_gamma(model, image):
    with pytest.raises(ValueError, match="unknown memory policy"):
        model.start(image, memory="lru")
    with pytest.raises(ValueError, match="gamma"):
        model.start(image, gamma=0.0)


def test_closed_session_refuses_steps(model, image):
    session = model.start(image)
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.step({"dolly_in"})


def test_save_and_load_round_trip(model, image, tmp_path):
    out = model.save_pretrained(tmp_path / "model", dtype=torch.float32)
    loaded = WorldModel.from_pretrained(out)
    np.testing.assert_array_equal(
        model.start(image, "x", seed=5).step({"dolly_in"}),
        loaded.start(image, "x", seed=5).step({"dolly_in"}),
    )
    small = model.save_pretrained(tmp_path / "bf16")  # default: bf16 weights
    dit_bytes = (small / "dit" / "model.safetensors").stat().st_size
    assert dit_bytes < 0.6 * (out / "dit" / "model.safetensors").stat().st_size
    assert WorldModel.from_pretrained(small).dit.patch_embedding.weight.dtype == torch.float32


def test_components_round_trip_and_reach_their_policies(model, image, tmp_path):
    from reverie.memory import RetrievalEmbedder, RetrievalEmbedderConfig
    from reverie.models import WanDiT

    torch.manual_seed(0)
    memory_model = WanDiT(model.dit.config)
    embedder_config = RetrievalEmbedderConfig(
        in_channels=model.vae.latent_channels, channels=(8, 16), dim=32, groups=4
    )
    components = {
        "memory_model": memory_model,
        "retrieval_embedder": RetrievalEmbedder(embedder_config),
    }
    packaged = WorldModel(model.config, model.dit, model.vae, components=components)
    out = packaged.save_pretrained(tmp_path / "model", dtype=torch.float32)
    assert (out / "memory_model").is_dir() and (out / "retrieval").is_dir()
    loaded = WorldModel.from_pretrained(out)
    assert set(loaded.components) == set(components)
    for key, module in components.items():
        state = loaded.components[key].state_dict()
        assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert loaded.make_policy("mag").writer is loaded.components["memory_model"]
    assert loaded.make_policy("retrieval").embed is loaded.components["retrieval_embedder"]
    assert loaded.make_policy("mag", writer=None).writer is None  # options win
    np.testing.assert_array_equal(
        packaged.start(image, "x", memory="mag", seed=3).step({"dolly_in"}),
        loaded.start(image, "x", memory="mag", seed=3).step({"dolly_in"}),
    )
    assert model.make_policy("mag").writer is None  # no component: the generator writes
    with pytest.raises(ValueError, match="no memory policy declares"):
        WorldModel(model.config, model.dit, model.vae, components={"critic": memory_model})


def test_from_pretrained_errors(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="world_model.json"):
        WorldModel.from_pretrained(tmp_path / "nothing")
    out = model.save_pretrained(tmp_path / "m", dtype=torch.float32)
    (out / "world_model.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        WorldModel.from_pretrained(out)
    (out / "world_model.json").write_text(json.dumps({"resolution": 64, "colour": "red"}))
    with pytest.raises(ValueError, match="colour"):
        WorldModel.from_pretrained(out)


def test_load_image_fits_and_refuses(tmp_path):
    from PIL import Image

    wide = np.zeros((40, 100, 3), np.uint8)
    frame, note = load_image(wide, 64)
    assert frame.shape == (64, 64, 3) and "cropped" in note and "resized" in note
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(grey)
    frame, note = load_image(grey, 64)
    assert frame.shape == (64, 64, 3) and "RGB" in note
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(corrupt, 64)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg", 64)
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((8, 8, 3), np.nan), 64)


def test_action_index_static_is_last():
    assert ACTION_INDEX["static"] == 12


def test_stream_pipelines_the_same_frames_as_step(model, image):
    steps = [{"dolly_in"}, {"pan_left"}, {"truck_right", "tilt_up"}]
    one_by_one = model.start(image, "x", seed=7)
    expected = [one_by_one.step(a) for a in steps]
    streamed = model.start(image, "x", seed=7)
    got = list(streamed.stream(steps))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert streamed.stats()["generated_frames"] == 3 * model.frames_per_step


@pytest.mark.parametrize("memory", ["relic", "mag", "retrieval"])
def test_commit_of_a_proposal_equals_step(model, image, memory):
    stepped = model.start(image, "x", memory=memory, seed=5)
    proposed = model.start(image, "x", memory=memory, seed=5)
    for names in ({"dolly_in"}, {"pan_left", "truck_right"}, {"tilt_up"}):
        expected = stepped.step(names)
        block = proposed.propose(names)
        np.testing.assert_array_equal(proposed.commit(block), expected)
    assert proposed.stats()["cache_tokens"] == stepped.stats()["cache_tokens"]
    np.testing.assert_array_equal(proposed.poses[1], stepped.poses[1])


def test_a_dropped_proposal_leaves_the_session_unchanged(model, image):
    session = model.start(image, "x", memory="relic", seed=6)
    session.step({"dolly_in"})
    before = session.stats()
    keys_before = [k.clone() for k in session.cache.keys]
    dropped = session.propose({"pan_left"})  # e.g. a key changed before it was due
    after = session.stats()
    for key in ("frames", "latent_frames", "cache_tokens", "cache_bytes"):
        assert after[key] == before[key]
    for k0, k1 in zip(keys_before, session.cache.keys, strict=True):
        torch.testing.assert_close(k1, k0, rtol=0, atol=0)
    kept = session.propose({"pan_right"})
    frames = session.commit(kept)
    assert frames.shape == (model.frames_per_step, 64, 64, 3)
    last = session.actions[-1]
    assert last[ACTION_INDEX["pan_right"]] > 0 and last[ACTION_INDEX["pan_left"]] == 0
    with pytest.raises(ValueError, match="stale proposal"):
        session.commit(dropped)
