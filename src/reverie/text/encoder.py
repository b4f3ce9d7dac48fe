"""The text-encoder protocol of the world model, and empty-text conditioning (MAG §3.2).

The DiT cross-attends to token-level text states (Wan2.1 uses umT5-XXL, zero-padded to 512
tokens). Every encoder returns a fixed number of tokens `max_length`, with the states of padding
positions set to exactly zero and a boolean mask marking real tokens, so batches of different
prompts stack and the DiT sees the same padding Wan was trained with.

Empty text: MAG (arXiv 2512.18741 §3.2) conditions the generator on the empty prompt with
probability `p` so it must use its memory instead of the caption. The empty prompt is the
encoder's embedding of `""` (its special tokens, e.g. BERT's [CLS][SEP], umT5's </s>), not an
all-zero context, exactly as Wan's pipelines encode a negative/empty prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

# The prompt of unconditional / empty-text conditioning (MAG §3.2, classifier-free guidance).
EMPTY_PROMPT = ""


class TextEncoderUnavailableError(RuntimeError):
    """The encoder's package or local weights are missing (nothing is ever downloaded)."""


@runtime_checkable
class TextEncoder(Protocol):
    """Token-level text conditioning for cross-attention.

    Attributes:
        dim: feature size `D` of each token state (MiniLM: 384, umT5-XXL: 4096).
        max_length: tokens per prompt `L` after truncation/zero-padding (MiniLM: 64, Wan: 512).
    """

    @property
    def dim(self) -> int:
        """Feature size `D` of each token state."""
        ...

    @property
    def max_length(self) -> int:
        """Tokens per prompt `L` of every output."""
        ...

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of prompts (frozen, no grad, deterministic).

        Shapes:
            returns `(embeddings (B, L, D) float32, mask (B, L) bool)`; `embeddings` is zero
            wherever `mask` is False; `L = max_length`.
        """
        ...

    def encode_empty(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty-prompt conditioning repeated `batch_size` times (MAG §3.2).

        Shapes: as `encode`, `B = batch_size`.
        """
        ...


def empty_text_dropout(
    prompts: Sequence[str], probability: float, generator: torch.Generator | None = None
) -> list[str]:
    """Replace each prompt by `EMPTY_PROMPT` with `probability` (MAG §3.2: p = 0.6 in the paper,
    0.8 in the official config; also classifier-free-guidance training).

    Raises:
        ValueError: unless `0 <= probability <= 1`.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    drop = torch.rand(len(prompts), generator=generator) < probability  # (B,) bool, CPU
    return [EMPTY_PROMPT if d else p for p, d in zip(prompts, drop.tolist(), strict=True)]
