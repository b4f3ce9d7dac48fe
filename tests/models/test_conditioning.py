"""RELIC §4.1.2 action/pose conditioning: zero-init identity, effect after training, grouping."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from model_testing import conditioning, perturb_new_modules, tiny_config

from reverie.models import WanDiT
from reverie.models.conditioning import group_video_frames, pose_features

TOLERANCE = 1e-4


def _loaded_model() -> WanDiT:
    torch.manual_seed(0)
    reference = WanTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=12,
        freq_dim=16,
        ffn_dim=48,
        num_layers=2,
    ).eval()
    with torch.no_grad():
        reference.proj_out.weight.normal_()  # Wan zero-inits the head; make outputs informative
    return WanDiT.from_diffusers(reference).eval()


def _inputs(generator, frames: int = 3):
    x = torch.randn(2, frames, 4, 4, 6, generator=generator)
    t = torch.rand(2, generator=generator)
    context = torch.randn(2, 5, 12, generator=generator)
    actions, poses = conditioning(2, 1 + 4 * (frames - 1), generator)
    return x, t, context, actions, poses


def test_new_modules_leave_loaded_wan_unchanged(generator) -> None:
    model = _loaded_model()
    x, t, context, actions, poses = _inputs(generator)
    with torch.no_grad():
        plain = model(x, t, context)
        conditioned = model(x, t, context, actions=actions, poses=poses)
    assert torch.equal(plain, conditioned)


@pytest.mark.parametrize("signal", ["actions", "poses"])
def test_trained_new_modules_change_the_output(signal: str, generator) -> None:
    model = _loaded_model()
    perturb_new_modules(model, generator)
    x, t, context, actions, poses = _inputs(generator)
    kwargs = {"actions": actions} if signal == "actions" else {"poses": poses}
    with torch.no_grad():
        plain = model(x, t, context)
        conditioned = model(x, t, context, **kwargs)
        other = model(
            x, t, context, **{signal: _inputs(generator)[3 if signal == "actions" else 4]}
        )
    assert (plain - conditioned).abs().max() > TOLERANCE
    assert (conditioned - other).abs().max() > TOLERANCE  # depends on the values, not presence


def test_poses_enter_queries_and_keys_not_values(generator) -> None:
    """RELIC §4.1.2: pose embeddings are added to Q and K, never to V."""
    model = WanDiT(tiny_config(actions=None)).eval()
    perturb_new_modules(model, generator)
    x = torch.randn(1, 2, 4, 4, 4, generator=generator)
    t, context = torch.rand(1, generator=generator), torch.randn(1, 3, 12, generator=generator)
    _, poses = conditioning(1, 5, generator)
    captured = []
    hook = model.blocks[0].self_attn.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        model(x, t, context)
        model(x, t, context, poses=poses)
    hook.remove()
    (out_plain, k_plain, v_plain), (out_pose, k_pose, v_pose) = captured
    assert torch.equal(v_plain, v_pose)
    assert (k_plain - k_pose).abs().max() > TOLERANCE
    assert (out_plain - out_pose).abs().max() > TOLERANCE


def test_group_video_frames_follows_the_wan_vae() -> None:
    video = torch.arange(9.0).reshape(1, 9, 1)  # frames 0..8 -> latent frames 0, 1, 2
    grouped = group_video_frames(video, 3, stride=4, starts_at_first_frame=True)
    assert grouped.tolist() == [[[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]]]
    later = group_video_frames(video[:, 1:], 2, stride=4, starts_at_first_frame=False)
    assert later.tolist() == [[[1, 2, 3, 4], [5, 6, 7, 8]]]
    with pytest.raises(ValueError, match="need 9 video frames"):
        group_video_frames(video[:, :8], 3, stride=4, starts_at_first_frame=True)


def test_pose_features_layout(generator) -> None:
    _, (rotation, centre) = conditioning(1, 2, generator)
    features = pose_features(rotation, centre, translation_scale=2.0)
    assert features.shape == (1, 2, 12)
    torch.testing.assert_close(features[..., :9].reshape(1, 2, 3, 3), rotation)
    torch.testing.assert_close(features[..., 9:], centre / 2.0)


def test_conditioning_without_encoder_is_an_error(generator) -> None:
    model = WanDiT(tiny_config(actions=None, poses=None))
    x, t, context, actions, poses = _inputs(generator)
    with pytest.raises(ValueError, match="no action encoder"):
        model(x, t, context, actions=actions)
    with pytest.raises(ValueError, match="no pose encoder"):
        model(x, t, context, poses=poses)
