"""Save and load tokenizer checkpoints: `vae.safetensors` + `vae_config.json` in one directory.

Two tokenizers share the format: `VideoVAE` (weights under diffusers' `AutoencoderKLWan`
state-dict names, so a converted Wan2.1 VAE loads with the `wan2.1` config) and the linear
`PatchTokenizer` (its config has `"kind": "patch"`). Both files are written atomically
(temporary file, then `os.replace`; `reverie.io.CheckpointFiles`, as for the DiT).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from reverie.io import CheckpointFiles
from reverie.tokenizer.config import VAEConfig
from reverie.tokenizer.patch import PatchTokenizer, PatchTokenizerConfig
from reverie.tokenizer.vae import VideoVAE

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "vae.safetensors"
CONFIG_NAME = "vae_config.json"
FILES = CheckpointFiles(weights=WEIGHTS_NAME, config=CONFIG_NAME)


Tokenizer = VideoVAE | PatchTokenizer


def _weights_module(vae: Tokenizer) -> torch.nn.Module:
    """The module whose state dict is stored (diffusers' module for a `VideoVAE`)."""
    return vae.model if isinstance(vae, VideoVAE) else vae


def save_vae(vae: Tokenizer, directory: str | Path) -> Path:
    """Write `directory/vae.safetensors` and `directory/vae_config.json`; returns the directory."""
    directory = FILES.save(directory, _weights_module(vae).state_dict(), vae.config.to_dict())
    logger.info("saved VideoVAE to %s", directory)
    return directory


def load_vae_config(directory: str | Path) -> VAEConfig | PatchTokenizerConfig:
    """Read `vae_config.json` strictly (unknown keys / wrong types raise ValueError)."""
    try:
        data = FILES.read_config(directory)
    except json.JSONDecodeError as e:
        raise ValueError(f"{Path(directory) / CONFIG_NAME} is not valid JSON: {e}") from e
    if isinstance(data, dict) and data.get("kind") == "patch":
        return PatchTokenizerConfig.from_dict(data)
    return VAEConfig.from_dict(data)


def build_tokenizer(config: VAEConfig | PatchTokenizerConfig) -> Tokenizer:
    """An (untrained) tokenizer of either kind from its config."""
    if isinstance(config, PatchTokenizerConfig):
        return PatchTokenizer(config)
    return VideoVAE(config)


def load_vae(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Tokenizer:
    """Rebuild a `VideoVAE` or `PatchTokenizer` from `save_vae`'s output.

    Raises:
        FileNotFoundError: if either file is missing.
        RuntimeError: if the weights do not fit the config (missing/unexpected keys, shapes).
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (not a save_vae directory?)")
    with torch.device(device):
        vae = build_tokenizer(load_vae_config(directory))
    _weights_module(vae).load_state_dict(FILES.load_weights(directory, device))
    if dtype is None or isinstance(vae, PatchTokenizer):  # the PCA bases stay float32
        return vae
    return vae.to(dtype)
