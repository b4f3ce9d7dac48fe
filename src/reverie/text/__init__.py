"""Text conditioning: frozen encoders returning zero-padded token states (Wan2.1, MAG §3.2).

Public API: the `TextEncoder` protocol, `MiniLMTextEncoder` (offline, CPU), `UMT5TextEncoder`
(Wan2.1, local weights only), `get_text_encoder`/`register_text_encoder`/`text_encoder_names`,
`EMPTY_PROMPT` and `empty_text_dropout` (MAG §3.2), `TextEncoderUnavailableError`.
"""

from reverie.text.encoder import (
    EMPTY_PROMPT,
    TextEncoder,
    TextEncoderUnavailableError,
    empty_text_dropout,
)
from reverie.text.minilm import MiniLMTextEncoder
from reverie.text.registry import get_text_encoder, register_text_encoder, text_encoder_names
from reverie.text.transformers_encoder import PromptCache, TransformersTextEncoder
from reverie.text.umt5 import UMT5TextEncoder

__all__ = [
    "EMPTY_PROMPT",
    "MiniLMTextEncoder",
    "PromptCache",
    "TextEncoder",
    "TextEncoderUnavailableError",
    "TransformersTextEncoder",
    "UMT5TextEncoder",
    "empty_text_dropout",
    "get_text_encoder",
    "register_text_encoder",
    "text_encoder_names",
]
