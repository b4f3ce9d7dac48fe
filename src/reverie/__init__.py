"""Reverie: interactive video world models with long-horizon memory.

Implements RELIC (arXiv 2512.04040), MAG (arXiv 2512.18741) and LongLive-RAG
(arXiv 2606.02553) as one system. See ``docs/conventions.md`` for tensor layouts,
units and camera conventions used throughout the package.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`reverie.WorldModel` / `reverie.Session` without importing torch at `import reverie`."""
    if name in ("WorldModel", "Session"):
        from reverie import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'reverie' has no attribute {name!r}")
