"""`UMT5TextEncoder`: Wan2.1's text encoder (umT5-XXL, 4096-d, 512 tokens) from a local path.

Wan-scale configs (`wan2.1-1.3b`, `wan2.1-14b`, `text_dim = 4096`) cross-attend to umT5 states
zero-padded to 512 tokens (Wan2.1 §3.1; diffusers `WanPipeline._get_t5_prompt_embeds`). The
weights are ~11 GB and are never downloaded here: pass a local diffusers-format checkpoint
(`<root>/text_encoder` + `<root>/tokenizer`, as in `Wan2.1-T2V-1.3B-Diffusers`) or a single
folder holding both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reverie.text.encoder import TextEncoderUnavailableError
from reverie.text.transformers_encoder import TransformersTextEncoder

# Wan2.1's text length (`text_len` in the Wan configs, `max_sequence_length` in diffusers).
WAN_TEXT_LENGTH = 512
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def umt5_directories(path: str | Path | None) -> tuple[Path, Path]:
    """`(model_dir, tokenizer_dir)` of a local umT5 checkpoint.

    Accepts a diffusers Wan root (with `text_encoder/` and `tokenizer/`) or one folder with
    both the model (config.json + weights) and the tokenizer files.

    Raises:
        TextEncoderUnavailableError: if `path` is None, missing, or has no config/weights.
    """
    if path is None:
        raise TextEncoderUnavailableError(
            "UMT5TextEncoder needs a local path to umT5 weights (e.g. the root of "
            "Wan2.1-T2V-1.3B-Diffusers, holding text_encoder/ and tokenizer/); nothing is "
            "downloaded. For CPU work use get_text_encoder('minilm')."
        )
    root = Path(path)
    if not root.is_dir():
        raise TextEncoderUnavailableError(f"umT5 path {root} is not a directory")
    model_dir = root / "text_encoder" if (root / "text_encoder").is_dir() else root
    tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
    has_weights = any(any(model_dir.glob(p)) for p in _WEIGHT_PATTERNS)
    if not (model_dir / "config.json").is_file() or not has_weights:
        raise TextEncoderUnavailableError(
            f"no umT5 config.json and weights (*.safetensors / *.bin) in {model_dir}"
        )
    return model_dir, tokenizer_dir


class UMT5TextEncoder(TransformersTextEncoder):
    """umT5 encoder states (transformers `UMT5EncoderModel`), frozen, LRU-cached.

    Args:
        path: local checkpoint (see `umt5_directories`); required.
        max_length: tokens per prompt (Wan: 512).
        device, dtype: where and in which precision the encoder runs (outputs are float32).
        cache_size: prompts kept in the LRU cache.

    Shapes: `encode(prompts)` -> `(embeddings (B, L, 4096) float32, mask (B, L) bool)`.

    Raises:
        TextEncoderUnavailableError: if no usable local checkpoint is given.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_length: int = WAN_TEXT_LENGTH,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        cache_size: int = 1024,
    ) -> None:
        model_dir, tokenizer_dir = umt5_directories(path)
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        model = UMT5EncoderModel.from_pretrained(
            str(model_dir), local_files_only=True, torch_dtype=dtype
        ).to(device)
        super().__init__(tokenizer, model, max_length=max_length, cache_size=cache_size)
