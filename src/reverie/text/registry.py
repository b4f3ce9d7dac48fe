"""Text encoders by name (STYLE §5): `minilm` (CPU, 384-d) and `umt5` (Wan2.1, 4096-d)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reverie.registry import Registry
from reverie.text.encoder import TextEncoder
from reverie.text.minilm import MiniLMTextEncoder
from reverie.text.umt5 import UMT5TextEncoder

TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry("text encoder")


def register_text_encoder(name: str, factory: Callable[..., TextEncoder]) -> None:
    """Register a factory (class or function) under `name`. Raises `KeyError` if taken."""
    TEXT_ENCODERS.add(name, factory)


def text_encoder_names() -> list[str]:
    """Registered encoder names, sorted."""
    return TEXT_ENCODERS.names()


def get_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """Build the encoder registered as `name` with `kwargs` (e.g. `path=` for `umt5`).

    Raises:
        KeyError: for an unknown name, listing the known ones.
        TextEncoderUnavailableError: if its package or local weights are missing.
    """
    return TEXT_ENCODERS.get(name)(**kwargs)


register_text_encoder("minilm", MiniLMTextEncoder)
register_text_encoder("umt5", UMT5TextEncoder)
