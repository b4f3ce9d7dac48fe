"""RELIC §4.4.2 replayed back-propagation: same generator gradient as one graph over the whole
rollout, bounded autograd memory, and a training rollout that is the inference loop."""

from __future__ import annotations

import weakref

import pytest
import torch

from reverie.diffusion import (
    BlockInputs,
    FewStepSchedule,
    block_spans,
    noisy_sample,
    x0_from_velocity,
)
from reverie.diffusion import rollout as block_rollout
from reverie.memory import get_policy
from reverie.models import AttentionConfig, AttentionMode, WanDiT, WanDiTConfig
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig
from reverie.training.replay import (
    ARStudent,
    Conditioning,
    naive_dmd_loss,
    replayed_dmd_backward,
    rollout_chunks,
)

CHANNELS, LATENT, TEXT_DIM, STRIDE = 4, (4, 4), 12, 4


def _model(mode: AttentionMode, frames_per_block: int, seed: int) -> WanDiT:
    torch.manual_seed(seed)
    config = WanDiTConfig(
        dim=32,
        ffn_dim=64,
        num_heads=2,
        num_layers=2,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        attention=AttentionConfig(mode, frames_per_block),
        actions=ActionEncoderConfig(hidden_dim=16),
        poses=PoseEncoderConfig(hidden_dim=16),
    )
    model = WanDiT(config)
    with torch.no_grad():  # real weights in the zero-initialised head and encoders
        model.head.head.weight.normal_(0.0, 0.3)
        for encoder in (model.action_encoder, model.pose_encoder):
            for proj in encoder.proj:
                proj.weight.normal_(0.0, 0.1)
    return model


def _conditioning(batch: int, num_frames: int) -> Conditioning:
    g = torch.Generator().manual_seed(0)
    num_video = 1 + STRIDE * (num_frames - 1)
    rotation = torch.linalg.matrix_exp(0.1 * torch.randn(batch, num_video, 3, 3, generator=g))
    return Conditioning(
        prefix=torch.randn(batch, 1, CHANNELS, *LATENT, generator=g),
        context=torch.randn(batch, 3, TEXT_DIM, generator=g),
        empty_context=torch.randn(batch, 3, TEXT_DIM, generator=g),
        actions=torch.rand(batch, num_video, 13, generator=g),
        poses=(rotation, torch.randn(batch, num_video, 3, generator=g)),
    )


def _score_fn(teacher: WanDiT, critic: WanDiT, cond: Conditioning, seed: int):
    """Δŝ ingredients on the full sequence (prefix clean at t = 0), seeded noise and time."""

    def score(latents: torch.Tensor):
        g = torch.Generator().manual_seed(seed)
        batch, n = latents.shape[:2]
        u = 0.2 + 0.6 * torch.rand(batch, generator=g)  # (B,)
        x_u = noisy_sample(latents, torch.randn(latents.shape, generator=g), u)
        sequence = torch.cat([cond.prefix, x_u], dim=1)  # (B, N, C, h, w)
        t = torch.cat([torch.zeros(batch, 1), u[:, None].expand(batch, n)], dim=1)  # (B, N)
        kwargs = cond.frames(0, n + 1, STRIDE)
        with torch.no_grad():
            real = teacher(sequence, t, cond.context, **kwargs)
            fake = critic(sequence, t, cond.context, **kwargs)
        return tuple(x0_from_velocity(sequence, v, t)[:, 1:] for v in (real, fake))

    return score


def _grads(model: WanDiT) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    "frames_per_block, num_frames, exits, policy",
    [
        (1, 5, [1, 3, 0, 2], "full"),
        (2, 6, [0, 3, 2], "full"),  # the first chunk [1, 2) completes the prefix's block
        (1, 5, [2, 2, 2, 2], "window"),  # eviction is replayed too
    ],
)
def test_replayed_gradient_equals_the_naive_gradient(frames_per_block, num_frames, exits, policy):
    student = _model(AttentionMode.BLOCK_CAUSAL, frames_per_block, seed=1)
    teacher = _model(AttentionMode.BIDIRECTIONAL, 1, seed=2).requires_grad_(False)
    critic = _model(AttentionMode.BIDIRECTIONAL, 1, seed=3).requires_grad_(False)
    cond = _conditioning(2, num_frames)
    options = {"window_frames": 1, "sink_frames": 1} if policy == "window" else {}
    runner = ARStudent(student, student.config, FewStepSchedule(), get_policy(policy, **options))
    score = _score_fn(teacher, critic, cond, seed=5)

    naive = naive_dmd_loss(
        runner, cond, num_frames, exits, score, generator=torch.Generator().manual_seed(7)
    )
    (0.5 * naive.loss).backward()  # an accumulation scale, applied to both
    naive_grads = _grads(student)
    student.zero_grad(set_to_none=True)
    replayed = replayed_dmd_backward(
        runner,
        cond,
        num_frames,
        exits,
        score,
        scale=0.5,
        generator=torch.Generator().manual_seed(7),
    )
    replayed_grads = _grads(student)

    assert torch.equal(naive.latents, replayed.latents)
    torch.testing.assert_close(replayed.loss, naive.loss.detach(), rtol=1e-6, atol=0)
    assert naive_grads.shape == replayed_grads.shape and naive_grads.norm() > 0
    assert (naive_grads - replayed_grads).abs().max() <= 1e-5 * naive_grads.norm()


def test_rollout_chunks_follow_the_block_grid():
    assert rollout_chunks(7, 1, 3) == [(1, 3), (3, 6), (6, 7)]
    assert rollout_chunks(4, 1, 1) == [(1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="prefix_frames"):
        rollout_chunks(1, 1, 1)


@torch.no_grad()
def test_rollout_exiting_at_the_last_step_is_the_inference_loop():
    """With every exit at the last step, the training rollout is the inference call of
    `rollout` on a cache that holds the clean prefix (same noise draws, same cache writes)."""
    student = _model(AttentionMode.BLOCK_CAUSAL, 1, seed=1)
    num_frames, steps = 4, FewStepSchedule().num_steps
    cond = _conditioning(1, num_frames)
    runner = ARStudent(student, student.config, FewStepSchedule(), get_policy("full"))
    rollout = runner.rollout(
        cond, num_frames, [steps - 1] * 3, grad=False, generator=torch.Generator().manual_seed(3)
    )
    cache = student.new_cache()
    t0 = torch.zeros(1)
    student(cond.prefix, t0, cond.context, cache=cache, write_cache=True, **cond.frames(0, 1, 4))
    later = cond.actions[:, 1:], cond.poses[0][:, 1:], cond.poses[1][:, 1:]
    actions, rotations, centres = (
        [c[:, 4 * b : 4 * (b + 1)] for b in range(num_frames - 1)] for c in later
    )
    blocks = [
        BlockInputs(cond.context, actions=a, poses=(r, c))
        for a, r, c in zip(actions, rotations, centres, strict=True)
    ]
    outputs = block_rollout(  # the inference call: default (last) exit steps
        student,
        cache,
        get_policy("full"),
        blocks,
        block_spans(1, num_frames, 1),
        FewStepSchedule().times,
        cond.prefix,
        generator=torch.Generator().manual_seed(3),
    )
    streamed = torch.cat([out.latents for out in outputs], dim=1)
    assert torch.equal(rollout.latents, streamed)
    assert [(b.start, b.end, b.exit_step) for b in rollout.blocks] == [
        (1, 2, 3),
        (2, 3, 3),
        (3, 4, 3),
    ]


class SavedTensorMeter:
    """Peak bytes of tensors saved for backward that are alive at once (autograd's memory)."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def _pack(self, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        holder = _Holder(tensor)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size: int) -> None:
        self.live -= size

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda h: h.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


class _Holder:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def test_replay_keeps_autograd_memory_bounded_while_naive_grows():
    """With a bounded cache (window policy) the replay's peak saved-tensor memory does not
    depend on the rollout length; the naive graph's grows with it."""
    student = _model(AttentionMode.BLOCK_CAUSAL, 1, seed=1)
    teacher = _model(AttentionMode.BIDIRECTIONAL, 1, seed=2).requires_grad_(False)
    policy = get_policy("window", window_frames=1, sink_frames=1)
    runner = ARStudent(student, student.config, FewStepSchedule(), policy)
    peaks: dict[str, list[int]] = {"replay": [], "naive": []}
    for num_frames in (3, 9):
        cond = _conditioning(1, num_frames)
        exits = [1] * (num_frames - 1)
        score = _score_fn(teacher, teacher, cond, seed=0)
        with SavedTensorMeter() as meter:
            replayed_dmd_backward(runner, cond, num_frames, exits, score)
        peaks["replay"].append(meter.peak)
        with SavedTensorMeter() as meter:
            naive_dmd_loss(runner, cond, num_frames, exits, score).loss.backward()
        peaks["naive"].append(meter.peak)
    assert peaks["replay"][0] == peaks["replay"][1]
    assert peaks["naive"][1] > 3 * peaks["naive"][0]
