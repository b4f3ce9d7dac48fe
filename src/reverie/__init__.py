"""Reverie: interactive video world models with long-horizon memory.

Implements RELIC (arXiv 2512.04040), MAG (arXiv 2512.18741) and LongLive-RAG
(arXiv 2606.02553) as one system. See ``docs/conventions.md`` for tensor layouts,
units and camera conventions used throughout the package.
"""

__version__ = "0.1.0"
