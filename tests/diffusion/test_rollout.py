"""The block rollout (Self Forcing inference and training) with a tiny WanDiT and a KV cache."""

from __future__ import annotations

import pytest
import torch

from reverie.diffusion import (
    BlockInputs,
    FewStepSchedule,
    block_spans,
    noisy_sample,
    rollout,
    split_per_block,
    video_frame_range,
    x0_from_velocity,
)
from reverie.memory import WriteSpec, get_policy
from reverie.memory.full import FullPolicy
from reverie.models import AttentionConfig, AttentionMode, WanDiT, WanDiTConfig
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig

TOLERANCE = 1e-4  # fp32 cached vs full forward (as in tests/models)
FRAMES_PER_BLOCK = 2
NUM_BLOCKS = 3
LATENT_SIZE = (4, 4)
CHANNELS = 4
STRIDE = 4  # Wan VAE temporal compression


@pytest.fixture(scope="module")
def model() -> WanDiT:
    torch.manual_seed(0)
    config = WanDiTConfig(
        dim=32,
        ffn_dim=64,
        num_heads=2,
        num_layers=2,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        text_dim=12,
        freq_dim=16,
        attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, FRAMES_PER_BLOCK),
        actions=ActionEncoderConfig(hidden_dim=16),
        poses=PoseEncoderConfig(hidden_dim=16),
    )
    model = WanDiT(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # give the zero-initialised head and encoders real weights
        model.head.head.weight.copy_(torch.randn(model.head.head.weight.shape, generator=generator))
        for encoder in (model.action_encoder, model.pose_encoder):
            for proj in encoder.proj:
                proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * 0.1)
    return model


def _conditioning(batch: int, generator: torch.Generator):
    num_video = 1 + STRIDE * (NUM_BLOCKS * FRAMES_PER_BLOCK - 1)
    actions = torch.rand(batch, num_video, 13, generator=generator)
    rotation = torch.linalg.matrix_exp(
        torch.randn(batch, num_video, 3, 3, generator=generator).tril(-1).mT
        - torch.randn(batch, num_video, 3, 3, generator=generator).tril(-1)
    )
    centre = torch.randn(batch, num_video, 3, generator=generator)
    context = torch.randn(batch, 5, 12, generator=generator)
    return context, actions, (rotation, centre)


def _generate(model, cache, context, *, actions=None, poses=None, seed=0, policy=None, **kw):
    """`rollout` over NUM_BLOCKS blocks from frame 0; returns the concatenated latents."""
    fpb = FRAMES_PER_BLOCK
    spans = block_spans(0, NUM_BLOCKS * fpb, fpb)
    blocks = [
        BlockInputs(
            context,
            actions=None if actions is None else actions[b],
            poses=None if poses is None else poses[b],
        )
        for b in range(NUM_BLOCKS)
    ]
    like = torch.empty(context.shape[0], fpb, CHANNELS, *LATENT_SIZE)
    outputs = rollout(
        model,
        cache,
        FullPolicy() if policy is None else policy,
        blocks,
        spans,
        FewStepSchedule().times,
        like,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return torch.cat([out.latents for out in outputs], dim=1)


def _stream(model, context, actions, poses, seed: int, policy=None):
    cache = model.new_cache()
    latents = _generate(
        model,
        cache,
        context,
        seed=seed,
        actions=split_per_block(actions, NUM_BLOCKS, FRAMES_PER_BLOCK),
        poses=list(
            zip(*(split_per_block(p, NUM_BLOCKS, FRAMES_PER_BLOCK) for p in poses), strict=True)
        ),
        policy=policy,
    )
    return latents, cache


class RecordingPolicy(FullPolicy):
    """`full`, recording (block count, cache frames) after every write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def after_write(self, cache, latents) -> None:
        super().after_write(cache, latents)
        self.sizes.append((len(self.sizes), cache.num_frames))


def test_video_frame_ranges() -> None:
    assert video_frame_range(0, 3) == slice(0, 9)
    assert video_frame_range(3, 6) == slice(9, 21)
    parts = split_per_block(torch.arange(21)[None], 2, 3)
    assert [p.shape[1] for p in parts] == [9, 12]
    with pytest.raises(ValueError, match="need 21 video frames"):
        split_per_block(torch.zeros(1, 20), 2, 3)


@torch.no_grad()
def test_streaming_equals_block_causal_full_forward(model) -> None:
    """Cached streaming == the same schedule run with full-sequence block-causal forwards, where
    earlier blocks enter as clean latents at t = 0 (what the cache-write pass stores)."""
    batch, seed = 2, 11
    context, actions, (rotation, centre) = _conditioning(batch, torch.Generator().manual_seed(0))
    streamed, cache = _stream(model, context, actions, (rotation, centre), seed)
    assert streamed.shape == (batch, NUM_BLOCKS * FRAMES_PER_BLOCK, CHANNELS, *LATENT_SIZE)
    assert torch.isfinite(streamed).all()
    assert cache.frame_indices == list(range(NUM_BLOCKS * FRAMES_PER_BLOCK))

    generator = torch.Generator().manual_seed(seed)  # same draw order as the loop
    times = FewStepSchedule().times
    clean: list[torch.Tensor] = []
    for b in range(NUM_BLOCKS):
        end = (b + 1) * FRAMES_PER_BLOCK
        video = video_frame_range(0, end)
        x = torch.randn(batch, FRAMES_PER_BLOCK, CHANNELS, *LATENT_SIZE, generator=generator)
        for i, t in enumerate(times):
            sequence = torch.cat([*clean, x], dim=1)  # (B, end, C, h, w)
            per_frame_t = torch.zeros(batch, end)
            per_frame_t[:, -FRAMES_PER_BLOCK:] = t
            v = model(
                sequence,
                per_frame_t,
                context,
                actions=actions[:, video],
                poses=(rotation[:, video], centre[:, video]),
            )[:, -FRAMES_PER_BLOCK:]
            x0 = x0_from_velocity(x, v, t)
            if i + 1 < len(times):
                noise = torch.randn(x0.shape, generator=generator)
                x = noisy_sample(x0, noise, times[i + 1])
        clean.append(x0)
    reference = torch.cat(clean, dim=1)
    assert (streamed - reference).abs().max() <= TOLERANCE


@torch.no_grad()
def test_streaming_is_seeded_and_cache_grows_per_block(model) -> None:
    context, actions, poses = _conditioning(1, torch.Generator().manual_seed(0))
    recording = RecordingPolicy()
    first, _ = _stream(model, context, actions, poses, seed=3, policy=recording)
    second, _ = _stream(model, context, actions, poses, seed=3)
    other, _ = _stream(model, context, actions, poses, seed=4)
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert recording.sizes == [(b, (b + 1) * FRAMES_PER_BLOCK) for b in range(NUM_BLOCKS)]


@torch.no_grad()
def test_loop_structure_and_memory_hook(model) -> None:
    """5 DiT passes per block (4 reads, 1 write at t = 0); the engine owns frame offsets even
    when the policy evicts frames (a rolling window of one block)."""
    calls: list[tuple[float, bool, int]] = []
    original = model.forward

    def recording(x, t, context, **kwargs):
        calls.append((t[0].item(), kwargs.get("write_cache", False), kwargs["frame_offset"]))
        return original(x, t, context, **kwargs)

    model.forward = recording
    try:
        policy = get_policy("window", window_frames=FRAMES_PER_BLOCK, sink_frames=0)
        latents = _generate(model, model.new_cache(), torch.randn(1, 5, 12), policy=policy)
    finally:
        del model.forward
    assert latents.shape[1] == NUM_BLOCKS * FRAMES_PER_BLOCK
    assert len(calls) == NUM_BLOCKS * 5
    times = FewStepSchedule().times
    for b in range(NUM_BLOCKS):
        block_calls = calls[5 * b : 5 * (b + 1)]
        assert [c[0] for c in block_calls] == pytest.approx([*times, 0.0])
        assert [c[1] for c in block_calls] == [False] * 4 + [True]
        assert {c[2] for c in block_calls} == {b * FRAMES_PER_BLOCK}


def test_per_block_conditioning_length_is_checked(model) -> None:
    blocks = [BlockInputs(torch.randn(1, 5, 12), actions=torch.zeros(1, 5, 13))]
    with pytest.raises(ValueError, match="1 blocks need as many spans"):
        next(
            rollout(
                model,
                model.new_cache(),
                FullPolicy(),
                blocks,
                block_spans(0, 2 * FRAMES_PER_BLOCK, FRAMES_PER_BLOCK),
                FewStepSchedule().times,
                torch.empty(1, FRAMES_PER_BLOCK, CHANNELS, *LATENT_SIZE),
            )
        )


def test_block_spans_follow_the_block_grid() -> None:
    assert block_spans(1, 7, 3) == [(1, 3), (3, 6), (6, 7)]
    assert block_spans(0, 4, 2) == [(0, 2), (2, 4)]
    with pytest.raises(ValueError, match="start_frame"):
        block_spans(3, 3, 1)


class EmptyTextWriterPolicy(FullPolicy):
    """A window of one block whose cache write runs a separate writer with empty text."""

    def __init__(self, writer) -> None:
        super().__init__()
        self.writer = writer
        self.window = get_policy("window", window_frames=FRAMES_PER_BLOCK, sink_frames=0)

    @property
    def write_spec(self) -> WriteSpec:
        return WriteSpec(model=self.writer, empty_text=True)

    def after_write(self, cache, latents) -> None:
        self.window.after_write(cache, latents)


@torch.no_grad()
def test_memory_policy_plugs_into_the_write(model) -> None:
    """A policy's separate writer with the empty prompt (MAG §3.3) runs every cache write."""
    writes: list[int] = []
    original = model.forward

    def writer(x, t, context, **kwargs):  # stands in for MAG's memory model
        writes.append(int(context.abs().sum() == 0))
        return original(x, t, context, **kwargs)

    cache = model.new_cache()
    policy = EmptyTextWriterPolicy(writer)
    empty = torch.zeros(1, 5, 12)
    fpb = FRAMES_PER_BLOCK
    blocks = [BlockInputs(torch.randn(1, 5, 12), empty) for _ in range(NUM_BLOCKS)]
    outputs = rollout(
        model,
        cache,
        policy,
        blocks,
        block_spans(0, NUM_BLOCKS * fpb, fpb),
        FewStepSchedule().times,
        torch.empty(1, fpb, CHANNELS, *LATENT_SIZE),
        generator=torch.Generator().manual_seed(0),
    )
    latents = torch.cat([out.latents for out in outputs], dim=1)
    assert latents.shape[1] == NUM_BLOCKS * fpb and writes == [1] * NUM_BLOCKS
    assert cache.frame_indices == [4, 5]  # the window holds the newest block only
