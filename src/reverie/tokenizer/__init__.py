"""The video tokenizers, in Wan2.1's causal layout with streaming encode/decode: Wan2.1's causal
3D VAE (`VideoVAE`) and a fixed linear patch tokenizer (`PatchTokenizer`, whitened PCA).

Public API: `VideoVAE`, `PatchTokenizer`/`PatchTokenizerConfig`/`fit_patch_tokenizer`,
`VAEConfig`, `get_vae_config`/`vae_preset_names`/`register_vae_preset`,
`build_tokenizer`/`load_vae_config`, `StreamingDecoder`/`StreamingEncoder`, the
`LatentDecoder`/`DecoderStream` protocols (room for RELIC §4.5's tiny decoder),
`save_vae`/`load_vae`, and the frame-count helpers `num_latent_frames`/`num_video_frames`.
"""

from reverie.tokenizer.checkpoints import build_tokenizer, load_vae, load_vae_config, save_vae
from reverie.tokenizer.config import (
    VAEConfig,
    get_vae_config,
    register_vae_preset,
    vae_preset_names,
)
from reverie.tokenizer.layout import num_latent_frames, num_video_frames
from reverie.tokenizer.patch import PatchTokenizer, PatchTokenizerConfig, fit_patch_tokenizer
from reverie.tokenizer.protocols import DecoderStream, LatentDecoder
from reverie.tokenizer.streaming import StreamingDecoder, StreamingEncoder
from reverie.tokenizer.vae import VideoVAE

__all__ = [
    "DecoderStream",
    "LatentDecoder",
    "PatchTokenizer",
    "PatchTokenizerConfig",
    "StreamingDecoder",
    "StreamingEncoder",
    "VAEConfig",
    "VideoVAE",
    "build_tokenizer",
    "fit_patch_tokenizer",
    "get_vae_config",
    "load_vae",
    "load_vae_config",
    "num_latent_frames",
    "num_video_frames",
    "register_vae_preset",
    "save_vae",
    "vae_preset_names",
]
