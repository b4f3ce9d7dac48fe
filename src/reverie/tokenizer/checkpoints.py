"""Save and load `VideoVAE` checkpoints: `vae.safetensors` + `vae_config.json` in one directory.

Weights use diffusers' `AutoencoderKLWan` state-dict names, so a converted Wan2.1 VAE loads with
the `wan2.1` config. Both files are written atomically (temporary file, then `os.replace`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from reverie.io import atomic_write_text, save_safetensors
from reverie.tokenizer.config import VAEConfig
from reverie.tokenizer.vae import VideoVAE

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "vae.safetensors"
CONFIG_NAME = "vae_config.json"


def save_vae(vae: VideoVAE, directory: str | Path) -> Path:
    """Write `directory/vae.safetensors` and `directory/vae_config.json`; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(directory / WEIGHTS_NAME, vae.model.state_dict())
    atomic_write_text(
        directory / CONFIG_NAME, json.dumps(vae.config.to_dict(), indent=2, sort_keys=True) + "\n"
    )
    logger.info("saved VideoVAE to %s", directory)
    return directory


def load_vae_config(directory: str | Path) -> VAEConfig:
    """Read `vae_config.json` strictly (unknown keys / wrong types raise)."""
    return VAEConfig.from_dict(json.loads((Path(directory) / CONFIG_NAME).read_text()))


def load_vae(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> VideoVAE:
    """Rebuild a `VideoVAE` from `save_vae`'s output.

    Raises:
        FileNotFoundError: if either file is missing.
        RuntimeError: if the weights do not fit the config (missing/unexpected keys, shapes).
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (not a save_vae directory?)")
    with torch.device(device):
        vae = VideoVAE(load_vae_config(directory))
    vae.model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device=str(device)))
    return vae if dtype is None else vae.to(dtype)
