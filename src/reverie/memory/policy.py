"""The memory-policy protocol and the policy registry (STYLE §7-8).

A memory policy decides which past latent frames the model sees, and in what form, while a
video streams. The engine owns the `KVCache` and the policy; the model only reads the cache and
appends one clean block per write pass. The loop, with the policy's part marked (Self Forcing
arXiv 2506.08009 §3, three nested loops):

    for block in blocks:                                     # (1) latent blocks
        for t in denoising_times:                            # (2) denoising passes
            v = model(x_t, t, text, cache=cache)             #     read-only: cache = context
        write_block(policy, cache, model, x0, text, ...)     # (3) cache write of the clean block:
            # the writer (policy.write_spec: generator, or MAG's memory model with empty text)
            # appends the block's K/V, then policy.after_write(cache, x0) evicts / pools /
            # offloads / retrieves, leaving the cache exactly as the next block must see it.

There is deliberately no separate "view" of the cache: every policy leaves the `KVCache` in the
state the next forward attends to (retrieval inserts its retrieved frames into it), so the
model's cached path is the same for every policy and no copy is made per denoising pass.

A policy that runs with a learned part (MAG's memory model, LongLive-RAG's embedder) declares
it in `components` (a `Component`: the constructor keyword, its directory in a packaged world
model, its loader and saver, which live beside the part's class). The engine loads, saves and
passes components by looping over these declarations; a cache-only policy declares none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from reverie.models.kv_cache import KVCache
from reverie.registry import Registry


@dataclass(frozen=True)
class WriteSpec:
    """How the engine runs the cache-write pass of a clean block (read by `write_block`).

    Attributes:
        model: the model that writes the cache, or None for the generator itself. MAG §3.3
            uses a separately trained memory model (same architecture as the generator).
        empty_text: condition the write pass on the empty prompt instead of the user's text
            (MAG: the memory model always writes with empty text).
    """

    model: nn.Module | None = None
    empty_text: bool = False


@dataclass(frozen=True)
class Component:
    """A learned part a memory policy runs with, packaged with the world model (STYLE §15).

    Declared by the policy class (`MemoryPolicy.components`, keyed by the component's name,
    e.g. `memory_model`); `WorldModel` holds the module under that name, saves it with `save`
    to `<model directory>/<directory>`, loads it back with `load` and passes it to the policy's
    constructor as `keyword`.

    Attributes:
        keyword: the policy constructor's argument that takes the module (`writer`, `embed`).
        directory: the component's sub-directory of a packaged world model.
        load: `load(directory, device)` -> the module in float32 (what `save` wrote).
        save: `save(module, directory)` writes the module in its own dtype (the directory may
            not exist yet).
    """

    keyword: str
    directory: str
    load: Callable[[Path, str | torch.device], nn.Module]
    save: Callable[[nn.Module, Path], object]


@runtime_checkable
class MemoryPolicy(Protocol):
    """What every memory policy provides (one file per policy, registered by name).

    A policy instance serves one stream (one `KVCache`) at a time and may hold side state for
    it (e.g. retrieval's offloaded history); `reset()` clears that state, the engine resets the
    cache.

    Attributes:
        name: registry name.
        config: the policy's frozen config dataclass.
        max_frames: most frames the policy leaves in the cache after `after_write` (the bound
            on what one forward attends to, besides its own chunk), or None if it grows with
            the stream.
        write_spec: which model writes the cache and with which text (`WriteSpec`).
        components: the learned parts the policy runs with, by name (`Component`; empty for
            a policy whose memory is the cache alone).
    """

    name: ClassVar[str]
    components: ClassVar[Mapping[str, Component]]
    config: Any

    @property
    def max_frames(self) -> int | None: ...

    @property
    def write_spec(self) -> WriteSpec: ...

    def reset(self) -> None:
        """Forget all side state (start of a new episode)."""
        ...

    def after_write(self, cache: KVCache, latents: torch.Tensor) -> None:
        """Compress / evict / retrieve after the engine wrote a clean block into `cache`.

        Shapes:
            latents: the clean block just written, `(B, T, C, H, W)`; its T frames are the
                last T frames of `cache` in storage order.
        """
        ...

    def num_tokens(self, cache: KVCache) -> int:
        """Tokens held: the cache's plus any side storage (e.g. offloaded frames)."""
        ...

    def nbytes(self, cache: KVCache) -> int:
        """Bytes held: the cache's K/V plus any side storage (K/V, embeddings)."""
        ...


class CacheResidentPolicy:
    """Defaults for a policy whose whole memory is the `KVCache` (no side storage).

    Subclasses set `config_class`, implement `after_write`, and override `max_frames` /
    `write_spec` / `components` where they differ.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    components: ClassVar[Mapping[str, Component]] = {}

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config

    @property
    def max_frames(self) -> int | None:
        return None

    @property
    def write_spec(self) -> WriteSpec:
        return WriteSpec()

    def reset(self) -> None:
        """Nothing to forget: all state lives in the cache."""

    def num_tokens(self, cache: KVCache) -> int:
        """The cache's token count."""
        return cache.num_tokens

    def nbytes(self, cache: KVCache) -> int:
        """The cache's K/V bytes."""
        return cache.nbytes


POLICIES: Registry[type] = Registry("memory policy")


def register_policy(name: str) -> Callable[[type], type]:
    """Class decorator adding a policy class to the registry under `name`.

    The class must have a `config_class` (its frozen config dataclass), a `components` mapping
    (`Component` by name, empty for a cache-only policy) and a constructor
    `cls(config, **runtime_components)`. Raises `KeyError` if the name is taken.
    """

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls.config_class):
            raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
        POLICIES.add(name, cls)
        cls.name = name
        return cls

    return register


def policy_names() -> list[str]:
    """Registered policy names, sorted."""
    return POLICIES.names()


def policy_components(name: str) -> Mapping[str, Component]:
    """The learned components the policy `name` declares (`Component` by name).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    return POLICIES.get(name).components


def declared_components() -> dict[str, Component]:
    """Every component some registered policy declares, by name (what a packaged world model
    may hold). Several policies may declare the same component.

    Raises:
        ValueError: two policies declare different components under one name.
    """
    found: dict[str, Component] = {}
    for name in policy_names():
        for key, component in policy_components(name).items():
            if found.setdefault(key, component) != component:
                raise ValueError(f"memory policies declare two different components {key!r}")
    return found


def get_policy(name: str, **kwargs: Any) -> MemoryPolicy:
    """A new policy by name.

    Keywords that are fields of the policy's config dataclass build its (frozen) config; any
    other keyword is a runtime component passed to the constructor (e.g. mag's `writer` model,
    retrieval's `embed` function).

    Raises:
        KeyError: for an unknown name, listing the known ones.
        TypeError: for a keyword that is neither a config field nor a constructor argument.
    """
    cls = POLICIES.get(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    config = {k: v for k, v in kwargs.items() if k in fields}
    components = {k: v for k, v in kwargs.items() if k not in fields}
    return cls(cls.config_class(**config), **components)


def check_new_block(cache: KVCache, latents: torch.Tensor) -> int:
    """Validate the `after_write` arguments; return the block's frame count T.

    Raises:
        ValueError: if `latents` is not `(B, T, C, H, W)` or the cache holds fewer than T
            frames.
    """
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, T, C, H, W), got {tuple(latents.shape)}")
    num_new = latents.shape[1]
    if cache.num_frames < num_new:
        raise ValueError(
            f"after_write with a {num_new}-frame block but the cache holds {cache.num_frames} "
            "frames: call it right after the block's write pass"
        )
    return num_new
