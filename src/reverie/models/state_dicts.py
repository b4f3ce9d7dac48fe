"""State-dict names: Wan2.1 reference <-> diffusers, and strict loading with readable errors.

`WanDiT` uses the parameter names of the Wan2.1 reference checkpoints (Wan-Video/Wan2.1
`wan/modules/model.py`), so those load as they are. diffusers' `WanTransformer3DModel` renames
them; `DIFFUSERS_TO_WAN` is the inverse of `TRANSFORMER_KEYS_RENAME_DICT` in diffusers'
`loaders/single_file_utils.py::convert_wan_transformer_to_diffusers` (tested against it),
including its swap of `norm2`/`norm3`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from reverie.models.config import WanDiTConfig

# Prefix some exported Wan checkpoints (ComfyUI, single-file) put in front of every key.
WAN_EXPORT_PREFIX = "model.diffusion_model."
# Our modules that are not in Wan checkpoints; zero-initialised, so missing is fine.
NEW_MODULE_PREFIXES = ("action_encoder.", "pose_encoder.")
# How many key names an error message lists before summarising.
MAX_KEYS_IN_ERROR = 20

_ATTENTION_RENAMES = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
_ATTENTION_NAMES = "|".join(re.escape(k) for k in _ATTENTION_RENAMES)

# (diffusers regex, Wan replacement); every diffusers key must match exactly one.
DIFFUSERS_TO_WAN: tuple[tuple[str, str], ...] = (
    (r"patch_embedding\.(weight|bias)", r"patch_embedding.\1"),
    (r"condition_embedder\.time_embedder\.linear_1\.(.+)", r"time_embedding.0.\1"),
    (r"condition_embedder\.time_embedder\.linear_2\.(.+)", r"time_embedding.2.\1"),
    (r"condition_embedder\.time_proj\.(.+)", r"time_projection.1.\1"),
    (r"condition_embedder\.text_embedder\.linear_1\.(.+)", r"text_embedding.0.\1"),
    (r"condition_embedder\.text_embedder\.linear_2\.(.+)", r"text_embedding.2.\1"),
    (r"blocks\.(\d+)\.attn1\.(norm_q|norm_k)\.(.+)", r"blocks.\1.self_attn.\2.\3"),
    (r"blocks\.(\d+)\.attn2\.(norm_q|norm_k)\.(.+)", r"blocks.\1.cross_attn.\2.\3"),
    (rf"blocks\.(\d+)\.attn1\.({_ATTENTION_NAMES})\.(.+)", "self_attn"),
    (rf"blocks\.(\d+)\.attn2\.({_ATTENTION_NAMES})\.(.+)", "cross_attn"),
    (r"blocks\.(\d+)\.norm2\.(.+)", r"blocks.\1.norm3.\2"),
    (r"blocks\.(\d+)\.ffn\.net\.0\.proj\.(.+)", r"blocks.\1.ffn.0.\2"),
    (r"blocks\.(\d+)\.ffn\.net\.2\.(.+)", r"blocks.\1.ffn.2.\2"),
    (r"blocks\.(\d+)\.scale_shift_table", r"blocks.\1.modulation"),
    (r"scale_shift_table", "head.modulation"),
    (r"proj_out\.(.+)", r"head.head.\1"),
)


class CheckpointKeyError(KeyError):
    """A state dict does not fit the model: lists missing, unexpected and mis-shaped keys."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def _summarise(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_KEYS_IN_ERROR])
    more = len(keys) - MAX_KEYS_IN_ERROR
    return shown + (f", ... ({more} more)" if more > 0 else "")


def diffusers_key_to_wan(key: str) -> str:
    """Rename one diffusers `WanTransformer3DModel` key to the Wan2.1 reference name.

    Raises:
        CheckpointKeyError: for keys of unsupported parts (i2v image branch, VACE, ...).
    """
    for pattern, replacement in DIFFUSERS_TO_WAN:
        match = re.fullmatch(pattern, key)
        if match is None:
            continue
        if replacement in ("self_attn", "cross_attn"):
            layer, name, rest = match.groups()
            return f"blocks.{layer}.{replacement}.{_ATTENTION_RENAMES[name]}.{rest}"
        return match.expand(replacement)
    raise CheckpointKeyError(f"diffusers key {key!r} has no Wan2.1 text-to-video counterpart")


def diffusers_to_wan_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a whole diffusers state dict to Wan2.1 reference names (tensors are shared).

    Raises:
        CheckpointKeyError: naming every key that has no counterpart.
    """
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        try:
            converted[diffusers_key_to_wan(key)] = tensor
        except CheckpointKeyError:
            unknown.append(key)
    if unknown:
        raise CheckpointKeyError(
            f"{len(unknown)} diffusers keys are not supported (image-to-video or other "
            f"variants?): {_summarise(unknown)}"
        )
    return converted


def strip_wan_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `model.diffusion_model.` prefix of some exported Wan checkpoints."""
    return {k.removeprefix(WAN_EXPORT_PREFIX): v for k, v in state_dict.items()}


def load_state_dict_checked(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing_prefixes: tuple[str, ...] = (),
) -> None:
    """`module.load_state_dict` that explains itself.

    Keys under `allow_missing_prefixes` may be absent (they keep their current values).

    Raises:
        CheckpointKeyError: naming missing keys, unexpected keys and shape mismatches.
    """
    expected = module.state_dict()
    missing = [
        k for k in expected if k not in state_dict and not k.startswith(allow_missing_prefixes)
    ]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_summarise(mismatched)}")
    if problems:
        raise CheckpointKeyError(
            f"state dict does not fit {type(module).__name__}: " + "; ".join(problems)
        )
    module.load_state_dict(state_dict, strict=False)


def config_from_diffusers(diffusers_config: Mapping[str, Any], **overrides: Any) -> WanDiTConfig:
    """`WanDiTConfig` equivalent to a diffusers `WanTransformer3DModel.config`.

    diffusers 0.42 builds Q/K RMSNorms whatever its `qk_norm` says, so the equivalent model
    always has `qk_norm=True`. `overrides` set our extra fields (attention, rope, encoders).

    Raises:
        NotImplementedError: for image-to-video configs (image cross-attention is not ported).
    """
    cfg = diffusers_config
    if cfg.get("image_dim") is not None or cfg.get("added_kv_proj_dim") is not None:
        raise NotImplementedError("Wan image-to-video (image cross-attention) is not ported")
    fields = dict(
        dim=cfg["num_attention_heads"] * cfg["attention_head_dim"],
        ffn_dim=cfg["ffn_dim"],
        num_heads=cfg["num_attention_heads"],
        num_layers=cfg["num_layers"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"] or cfg["in_channels"],
        text_dim=cfg["text_dim"],
        freq_dim=cfg["freq_dim"],
        patch_size=tuple(cfg["patch_size"]),
        qk_norm=True,
        cross_attn_norm=bool(cfg["cross_attn_norm"]),
        eps=float(cfg["eps"]),
    )
    fields.update(overrides)
    return WanDiTConfig(**fields)
