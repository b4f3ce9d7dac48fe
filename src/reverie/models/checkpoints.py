"""Save and load `WanDiT` checkpoints: `model.safetensors` + `config.json` in one directory.

Both files are written atomically (temporary file in the same directory, then `os.replace`), so
a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from reverie.io import atomic_write_text, save_safetensors
from reverie.models.config import WanDiTConfig
from reverie.models.state_dicts import load_state_dict_checked
from reverie.models.wan_dit import WanDiT

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(model: WanDiT, directory: str | Path) -> Path:
    """Write `directory/model.safetensors` and `directory/config.json`; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(directory / WEIGHTS_NAME, model.state_dict())
    atomic_write_text(
        directory / CONFIG_NAME, json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    )
    logger.info("saved WanDiT checkpoint to %s", directory)
    return directory


def load_config(directory: str | Path) -> WanDiTConfig:
    """Read `config.json` strictly (unknown keys / wrong types raise)."""
    return WanDiTConfig.from_dict(json.loads((Path(directory) / CONFIG_NAME).read_text()))


def load_checkpoint(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> WanDiT:
    """Rebuild a `WanDiT` from `save_checkpoint`'s output.

    Raises:
        CheckpointKeyError: if the weights do not fit the config (names missing/unexpected keys).
    """
    directory = Path(directory)
    config = load_config(directory)
    with torch.device(device):
        model = WanDiT(config)
    load_state_dict_checked(model, load_file(str(directory / WEIGHTS_NAME), device=str(device)))
    return model if dtype is None else model.to(dtype)
