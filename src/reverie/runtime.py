"""Process-wide runtime setup, called by entry points (never at import time)."""

from __future__ import annotations

import logging
import os


def setup_runtime(*, threads: int | None = None, log_level: str = "INFO") -> None:
    """Configure logging, torch threads and MuJoCo's headless GL backend.

    Args:
        threads: torch intra-op threads (default: torch's choice).
        log_level: level of the ``reverie`` logger.
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("MUJOCO_GL", "egl")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
