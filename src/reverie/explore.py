"""`reverie explore` (placeholder)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `reverie explore` (not yet implemented)."""
