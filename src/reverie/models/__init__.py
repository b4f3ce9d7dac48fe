"""The world-model backbone: our Wan2.1 DiT with RELIC's action/pose conditioning (RELIC §4.1).

Public API: `WanDiT`, `WanDiTConfig`, `get_preset`/`preset_names`/`register_preset`, `KVCache`,
`AttentionConfig`/`AttentionMode`, `RopeConfig`, `ActionEncoderConfig`/`PoseEncoderConfig`,
`save_checkpoint`/`load_checkpoint`, `CheckpointKeyError`.
"""

from reverie.models.attention import AttentionConfig, AttentionMode
from reverie.models.checkpoints import load_checkpoint, save_checkpoint
from reverie.models.conditioning import ActionEncoderConfig, PoseEncoderConfig
from reverie.models.config import WanDiTConfig
from reverie.models.kv_cache import CachedFrame, KVCache
from reverie.models.presets import get_preset, preset_names, register_preset
from reverie.models.rope import RopeConfig
from reverie.models.state_dicts import CheckpointKeyError
from reverie.models.wan_dit import WanDiT

__all__ = [
    "ActionEncoderConfig",
    "AttentionConfig",
    "AttentionMode",
    "CachedFrame",
    "CheckpointKeyError",
    "KVCache",
    "PoseEncoderConfig",
    "RopeConfig",
    "WanDiT",
    "WanDiTConfig",
    "get_preset",
    "load_checkpoint",
    "preset_names",
    "register_preset",
    "save_checkpoint",
]
