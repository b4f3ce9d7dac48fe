"""Checkpoint formats: Wan2.1 reference names, diffusers names, our safetensors + JSON."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from model_testing import tiny_config

from reverie.models import (
    AttentionConfig,
    AttentionMode,
    CheckpointKeyError,
    WanDiT,
    WanDiTConfig,
    load_checkpoint,
    save_checkpoint,
)
from reverie.models.checkpoints import CONFIG_NAME, WEIGHTS_NAME
from reverie.models.state_dicts import diffusers_to_wan_state_dict


def _diffusers_model(cross_attn_norm: bool = True) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=12,
        freq_dim=16,
        ffn_dim=48,
        num_layers=2,
        cross_attn_norm=cross_attn_norm,
    ).eval()


@pytest.mark.parametrize("cross_attn_norm", [True, False])
def test_original_names_round_trip_through_diffusers_converter(cross_attn_norm: bool) -> None:
    """diffusers -> Wan reference names (ours) -> diffusers' own converter == identity."""
    reference = _diffusers_model(cross_attn_norm)
    diffusers_sd = reference.state_dict()
    wan_sd = diffusers_to_wan_state_dict(diffusers_sd)
    assert "head.head.weight" in wan_sd and "blocks.1.ffn.2.bias" in wan_sd
    assert ("blocks.0.norm3.weight" in wan_sd) == cross_attn_norm  # the norm2/norm3 swap
    back = convert_wan_transformer_to_diffusers(
        {f"model.diffusion_model.{k}": v.clone() for k, v in wan_sd.items()}
    )
    assert back.keys() == diffusers_sd.keys()
    for key, tensor in diffusers_sd.items():
        assert torch.equal(back[key], tensor), key


def test_load_wan_state_dict_gives_equal_model(generator) -> None:
    reference = _diffusers_model()
    wan_sd = diffusers_to_wan_state_dict(reference.state_dict())
    from_diffusers = WanDiT.from_diffusers(reference)
    model = WanDiT(from_diffusers.config)
    model.load_wan_state_dict({f"model.diffusion_model.{k}": v for k, v in wan_sd.items()})
    loaded, expected = model.state_dict(), from_diffusers.state_dict()
    for name in wan_sd:
        assert torch.equal(loaded[name], expected[name]), name
    x = torch.randn(1, 2, 4, 4, 4, generator=generator)
    t, context = torch.rand(1, generator=generator), torch.randn(1, 3, 12, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context), from_diffusers(x, t, context))


def test_loading_names_missing_and_unexpected_keys() -> None:
    model = WanDiT(tiny_config())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["blocks.1.self_attn.q.weight"]
    state["blocks.0.self_attn.k_img.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError) as error:
        model.load_wan_state_dict(state)
    message = str(error.value)
    assert "missing keys (1): blocks.1.self_attn.q.weight" in message
    assert "unexpected keys (1): blocks.0.self_attn.k_img.weight" in message


def test_loading_reports_shape_mismatch() -> None:
    model = WanDiT(tiny_config())
    state = dict(model.state_dict())
    state["head.head.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointKeyError, match="shape mismatches .*head.head.bias"):
        model.load_wan_state_dict(state)


def test_unknown_diffusers_keys_are_named() -> None:
    state = dict(_diffusers_model().state_dict())
    state["condition_embedder.image_embedder.norm1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match="image_embedder"):
        diffusers_to_wan_state_dict(state)


def test_save_load_round_trip(tmp_path, generator) -> None:
    config = tiny_config(
        qk_norm=False,
        attention=AttentionConfig(AttentionMode.BLOCK_CAUSAL, frames_per_block=2),
        poses=None,
    )
    model = WanDiT(config)
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_config_json_is_strict(tmp_path) -> None:
    data = tiny_config().to_dict()
    assert WanDiTConfig.from_dict(json.loads(json.dumps(data))) == tiny_config()
    with pytest.raises(ValueError, match="unknown field"):
        WanDiTConfig.from_dict({**data, "dropout": 0.1})
    with pytest.raises(ValueError, match="config.num_layers"):
        WanDiTConfig.from_dict({**data, "num_layers": "2"})
    with pytest.raises(ValueError, match=r"config.rope: unknown field"):
        WanDiTConfig.from_dict({**data, "rope": {"thetaa": 1.0}})


def test_weights_that_do_not_fit_the_config_fail_loudly(tmp_path) -> None:
    save_checkpoint(WanDiT(tiny_config()), tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["num_layers"] = 1
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointKeyError, match="unexpected keys .*blocks.1"):
        load_checkpoint(tmp_path)
