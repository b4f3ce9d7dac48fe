"""Save and load `WanDiT` checkpoints: `model.safetensors` + `config.json` in one directory.

Both files are written atomically (temporary file in the same directory, then `os.replace`), so
a crash never leaves a half-written checkpoint under the final name (`reverie.io.CheckpointFiles`,
the format the tokenizer checkpoints share).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from reverie.io import CheckpointFiles
from reverie.models.config import WanDiTConfig
from reverie.models.state_dicts import load_state_dict_checked
from reverie.models.wan_dit import WanDiT

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FILES = CheckpointFiles(weights=WEIGHTS_NAME, config=CONFIG_NAME)


def save_checkpoint(model: WanDiT, directory: str | Path) -> Path:
    """Write `directory/model.safetensors` and `directory/config.json`; returns the directory."""
    directory = FILES.save(directory, model.state_dict(), model.config.to_dict())
    logger.info("saved WanDiT checkpoint to %s", directory)
    return directory


def load_config(directory: str | Path) -> WanDiTConfig:
    """Read `config.json` strictly (unknown keys / wrong types raise)."""
    return WanDiTConfig.from_dict(FILES.read_config(directory))


def load_checkpoint(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> WanDiT:
    """Rebuild a `WanDiT` from `save_checkpoint`'s output.

    Raises:
        CheckpointKeyError: if the weights do not fit the config (names missing/unexpected keys).
    """
    config = load_config(directory)
    with torch.device(device):
        model = WanDiT(config)
    load_state_dict_checked(model, FILES.load_weights(directory, device))
    return model if dtype is None else model.to(dtype)
