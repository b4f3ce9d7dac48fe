"""Named registries of components (STYLE §5: variants come from registries and config).

Size presets, VAE presets, text encoders, memory policies and training stages are each a
:class:`Registry`; modules expose thin ``register_*`` / ``get_*`` / ``*_names`` functions over it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> component mapping that refuses duplicates and names the known entries.

    Args:
        kind: what the entries are, for error messages (e.g. ``"memory policy"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; returns it. Raises ``KeyError`` if taken."""
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        """The entry named ``name``. Raises ``KeyError`` listing the known names."""
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
