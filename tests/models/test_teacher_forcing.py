"""Teacher-forcing forward (`clean=`) and x0 prediction of `WanDiT`."""

from __future__ import annotations

import pytest
import torch
from model_testing import conditioning, perturb_new_modules, tiny_config

from reverie.diffusion import x0_from_velocity
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


@pytest.mark.parametrize("frames_per_block", [1, 2])
def test_teacher_forcing_equals_one_forward_per_block(frames_per_block, generator):
    """Noisy block j of the teacher-forcing pass == a block-causal forward of [clean blocks
    before j (t = 0), noisy block j (t_j)], i.e. what the streaming engine computes."""
    model = _model(frames_per_block)
    clean = torch.randn(2, FRAMES, 4, 4, 6, generator=generator)
    noisy = torch.randn(2, FRAMES, 4, 4, 6, generator=generator)
    t = torch.rand(2, FRAMES, generator=generator)
    text = torch.randn(2, 5, 12, generator=generator)
    actions, (rotation, centre) = conditioning(2, 1 + STRIDE * (FRAMES - 1), generator)
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
