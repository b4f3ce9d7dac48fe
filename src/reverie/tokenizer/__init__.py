"""The video tokenizer: Wan2.1's causal 3D VAE in Reverie's layout, with streaming encode/decode.

Public API: `VideoVAE`, `VAEConfig`, `get_vae_config`/`vae_preset_names`/`register_vae_preset`,
`StreamingDecoder`/`StreamingEncoder`, the `LatentDecoder`/`DecoderStream` protocols (room for
RELIC §4.5's tiny decoder), `save_vae`/`load_vae`, and the frame-count helpers
`num_latent_frames`/`num_video_frames`.
"""

from reverie.tokenizer.checkpoints import load_vae, save_vae
from reverie.tokenizer.config import (
    VAEConfig,
    get_vae_config,
    register_vae_preset,
    vae_preset_names,
)
from reverie.tokenizer.layout import num_latent_frames, num_video_frames
from reverie.tokenizer.protocols import DecoderStream, LatentDecoder
from reverie.tokenizer.streaming import StreamingDecoder, StreamingEncoder
from reverie.tokenizer.vae import VideoVAE

__all__ = [
    "DecoderStream",
    "LatentDecoder",
    "StreamingDecoder",
    "StreamingEncoder",
    "VAEConfig",
    "VideoVAE",
    "get_vae_config",
    "load_vae",
    "num_latent_frames",
    "num_video_frames",
    "register_vae_preset",
    "save_vae",
    "vae_preset_names",
]
