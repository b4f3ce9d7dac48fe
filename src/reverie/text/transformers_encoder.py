"""`TransformersTextEncoder`: a frozen Hugging Face encoder's token states, padded like Wan.

Shared by `MiniLMTextEncoder` and `UMT5TextEncoder`. Follows Wan2.1's text path (diffusers
`WanPipeline._get_t5_prompt_embeds`): tokenize with truncation to `max_length`, run the encoder
with the attention mask, keep the real tokens' last hidden states and zero the rest. Prompts
repeat a lot (one caption per scene, the empty prompt), so per-prompt results are kept in an
LRU cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from reverie.text.encoder import EMPTY_PROMPT


class PromptCache:
    """LRU map prompt -> `(embedding (L, D) float32, mask (L,) bool)`; capacity 0 disables it."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._entries

    def get(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached `(embedding (L, D), mask (L,))` (marked most recent), or None."""
        entry = self._entries.get(prompt)
        if entry is not None:
            self._entries.move_to_end(prompt)
        return entry

    def put(self, prompt: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Store `(embedding (L, D), mask (L,))`, evicting the least recently used entry."""
        if self.capacity == 0:
            return
        self._entries[prompt] = entry
        self._entries.move_to_end(prompt)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()


class TransformersTextEncoder:
    """A frozen transformers encoder (`AutoModel`-like) + tokenizer behind the `TextEncoder`
    protocol.

    Args:
        tokenizer: a transformers tokenizer (called with `padding="max_length"`).
        model: an encoder returning `last_hidden_state (B, L, D)`; frozen and set to eval here.
        max_length: tokens per prompt `L` (longer prompts are truncated).
        cache_size: prompts kept in the LRU cache (0 disables caching).
    """

    def __init__(
        self, tokenizer, model: nn.Module, *, max_length: int, cache_size: int = 1024
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for special tokens), got {max_length}")
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self._max_length = max_length
        self._dim = model.get_input_embeddings().weight.shape[1]
        self.cache = PromptCache(cache_size)

    @property
    def dim(self) -> int:
        """Feature size `D` (the model's hidden size)."""
        return self._dim

    @property
    def max_length(self) -> int:
        """Tokens per prompt `L`."""
        return self._max_length

    @property
    def device(self) -> torch.device:
        """Where the model runs and outputs live."""
        return self.model.get_input_embeddings().weight.device

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes: returns `(embeddings (n, L, D) float32 zero-padded, mask (n, L) bool)`."""
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self._max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)  # (n, L)
        mask = batch["attention_mask"].to(self.device).bool()  # (n, L)
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        states = states.float() * mask[..., None]  # (n, L, D), zero after the mask (Wan)
        return states, mask

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts through the LRU cache (see `TextEncoder.encode`).

        Shapes:
            prompts: B strings (may repeat, may be empty).
            returns `(embeddings (B, L, D) float32, mask (B, L) bool)` on the encoder's device;
            fresh tensors (mutating them does not touch the cache).

        Raises:
            TypeError: if `prompts` is a single string or holds non-strings.
            ValueError: on an empty batch.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        if len(prompts) == 0:
            raise ValueError("encode needs at least one prompt")
        results = {p: self.cache.get(p) for p in dict.fromkeys(prompts)}
        missing = [p for p, entry in results.items() if entry is None]
        if missing:
            states, mask = self._encode_uncached(missing)
            for i, prompt in enumerate(missing):
                results[prompt] = (states[i].clone(), mask[i].clone())
                self.cache.put(prompt, results[prompt])
        embeddings = torch.stack([results[p][0] for p in prompts])  # (B, L, D)
        masks = torch.stack([results[p][1] for p in prompts])  # (B, L)
        return embeddings, masks

    def encode_empty(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding of `""` repeated (MAG §3.2). Shapes: `(B, L, D)`, `(B, L)`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self.encode([EMPTY_PROMPT] * batch_size)
