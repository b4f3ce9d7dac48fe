"""Teacher-forcing forward (`clean=`) and x0 prediction of `WanDiT`."""

from __future__ import annotations

import pytest
import torch
from model_testing import conditioning, perturb_new_modules, tiny_config

from reverie.diffusion import x0_from_velocity
from reverie.memory import get_policy, write_block
from reverie.memory.visibility import context_layout, context_visibility
from reverie.models import AttentionConfig, AttentionMode, WanDiT
from reverie.models.attention import teacher_forcing_mask

TOLERANCE = 1e-4
FRAMES = 6
STRIDE = 4


def _model(frames_per_block: int, **overrides) -> WanDiT:
    torch.manual_seed(0)
    attention = AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=frames_per_block)
    model = WanDiT(tiny_config(attention=attention, **overrides)).eval()
    perturb_new_modules(model, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.head.head.weight.normal_()  # Wan zero-inits the head
    return model


def test_mask_pattern():
    mask = teacher_forcing_mask(num_frames=4, frames_per_block=2, tokens_per_frame=1)
    clean, noisy = slice(0, 4), slice(4, 8)
    # clean: block-causal among clean frames, never the noisy copy
    assert mask[clean, clean].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert not mask[clean, noisy].any()
    # noisy block j: clean blocks < j, its own noisy block only
    assert mask[noisy, clean].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert mask[noisy, noisy].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def _clip(generator: torch.Generator) -> tuple:
    """Clean and noisy latents, per-frame times, text and conditioning of a 2-sample clip."""
    clean = torch.randn(2, FRAMES, 4, 4, 6, generator=generator)
    noisy = torch.randn(2, FRAMES, 4, 4, 6, generator=generator)
    t = torch.rand(2, FRAMES, generator=generator)
    text = torch.randn(2, 5, 12, generator=generator)
    actions, poses = conditioning(2, 1 + STRIDE * (FRAMES - 1), generator)
    return clean, noisy, t, text, actions, poses


@pytest.mark.parametrize("frames_per_block", [1, 2])
def test_teacher_forcing_equals_one_forward_per_block(frames_per_block, generator):
    """Noisy block j of the teacher-forcing pass == a block-causal forward of [clean blocks
    before j (t = 0), noisy block j (t_j)], i.e. what the streaming engine computes."""
    model = _model(frames_per_block)
    clean, noisy, t, text, actions, (rotation, centre) = _clip(generator)
    with torch.no_grad():
        tf = model(noisy, t, text, clean=clean, actions=actions, poses=(rotation, centre))
        for start in range(0, FRAMES, frames_per_block):
            end = start + frames_per_block
            x = torch.cat([clean[:, :start], noisy[:, start:end]], 1)
            t_seq = torch.cat([torch.zeros(2, start), t[:, start:end]], 1)
            video = slice(0, 1 + STRIDE * (end - 1))
            ref = model(
                x,
                t_seq,
                text,
                actions=actions[:, video],
                poses=(rotation[:, video], centre[:, video]),
            )[:, start:end]
            assert (tf[:, start:end] - ref).abs().max() <= TOLERANCE


def _video(start: int, end: int) -> slice:
    """Video frames of latent frames `start .. end - 1` (frame 0 holds one video frame)."""
    return slice(0 if start == 0 else 1 + STRIDE * (start - 1), 1 + STRIDE * (end - 1))


@pytest.mark.parametrize(
    ("frames_per_block", "name", "options"),
    [
        (1, "window", {"sink_frames": 1, "window_frames": 2}),
        (2, "window", {"sink_frames": 1, "window_frames": 2}),
        (1, "mag", {"block_frames": 2, "write_with_empty_text": False}),
        (1, "full", {}),
        (1, "relic", {"window_frames": 1, "schedule": (1, 2, 3)}),
        (2, "relic", {"window_frames": 1, "schedule": (2,)}),
    ],
)
def test_teacher_forcing_through_a_policy_equals_streaming_with_it(
    frames_per_block, name, options, generator
):
    """With `context_visible` read off a policy, noisy block j of one teacher-forced pass ==
    the streaming engine's forward on the cache the policy left after writing the clean
    blocks before j (`write_block`), for every block: training sees the memory's context."""
    model = _model(frames_per_block)
    clean, noisy, t, text, actions, (rotation, centre) = _clip(generator)
    policy = get_policy(name, **options)
    layout = context_layout(policy, FRAMES, frames_per_block, token_grid=(2, 3))
    visible, pooled = layout.full, None
    if name == "full":
        assert visible.equal(torch.ones(FRAMES, FRAMES, dtype=torch.bool).tril(-1))
    else:
        assert visible.sum() < FRAMES * (FRAMES - 1) // 2  # the policy drops or pools frames
    if name == "relic":
        assert layout.has_pooling
        pooled = layout.pooled_context()
    batched = visible.expand(2, FRAMES, FRAMES)
    cache = model.new_cache()
    with torch.no_grad():
        tf = model(
            noisy,
            t,
            text,
            clean=clean,
            context_visible=batched,
            pooled_context=pooled,
            actions=actions,
            poses=(rotation, centre),
        )
        for start in range(0, FRAMES, frames_per_block):
            end = start + frames_per_block
            video = _video(start, end)
            inputs = {"actions": actions[:, video], "poses": (rotation[:, video], centre[:, video])}
            ref = model(
                noisy[:, start:end],
                t[:, start:end],
                text,
                cache=cache,
                frame_offset=start,
                **inputs,
            )
            assert (tf[:, start:end] - ref).abs().max() <= TOLERANCE, f"block at {start}"
            write_block(
                policy, cache, model, clean[:, start:end], text, frame_offset=start, **inputs
            )


def test_context_visibility_refuses_what_a_mask_cannot_hold():
    with pytest.raises(ValueError, match="pools frames"):
        context_visibility(get_policy("relic"), 12, 1, token_grid=(4, 4))
    with pytest.raises(ValueError, match="twice"):
        context_layout(get_policy("relic", horizon_frames=6, window_frames=2), 12, 1, (4, 4))
    with pytest.raises(ValueError, match="retrieved or offloaded"):
        context_layout(get_policy("retrieval"), 12, 1, (4, 4))
    with pytest.raises(ValueError, match="empty prompt"):
        context_visibility(get_policy("mag", block_frames=3), 8, 1)
    with pytest.raises(ValueError, match="split"):
        context_visibility(get_policy("window"), 7, 2)
    with pytest.raises(ValueError, match="context_visible"):
        teacher_forcing_mask(4, 1, 1, context_visible=torch.ones(3, 3, dtype=torch.bool))


def test_teacher_forcing_checks(generator):
    model = _model(1)
    x = torch.randn(1, 2, 4, 4, 6)
    text = torch.randn(1, 5, 12)
    with pytest.raises(ValueError, match="match"):
        model(x, torch.rand(1), text, clean=x[:, :1])
    bidirectional = WanDiT(tiny_config()).eval()
    with pytest.raises(ValueError, match="block-causal"):
        bidirectional(x, torch.rand(1), text, clean=x)


def test_x0_prediction_reads_back_the_head(generator):
    """An x0 model's velocity gives back its head's output as `x - t v` at every t > 0 (the
    samplers' and losses' read-out), for per-sample and per-frame times."""
    model = _model(1, prediction="x0")
    velocity_twin = _model(1)  # same weights and init seed: its "velocity" is the raw head
    x = torch.randn(2, 3, 4, 4, 6, generator=generator)
    text = torch.randn(2, 5, 12, generator=generator)
    for t in (torch.rand(2, generator=generator) + 0.01, torch.rand(2, 3, generator=generator)):
        with torch.no_grad():
            head = velocity_twin(x, t, text)
            x0 = x0_from_velocity(x, model(x, t, text), t)
        assert torch.allclose(x0, head, atol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        tiny_config(prediction="noise")
