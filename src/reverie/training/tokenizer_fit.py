"""``reverie fit-tokenizer``: fit the linear ``PatchTokenizer`` on a rendered dataset.

    reverie fit-tokenizer --data runs/default/data/worlds --out runs/default/vae
    reverie fit-tokenizer --data data/tiny --out runs/tiny/patch --channels 16 --episodes 64

Reads up to ``--episodes`` episodes of the dataset (manifest order), accumulates the patch
covariances in float64 and writes a ``save_vae`` directory (``vae.safetensors`` +
``vae_config.json`` with ``"kind": "patch"``) that ``reverie encode --vae`` and
``reverie.training.export --vae`` take like a trained VAE, plus ``fit_report.json``. Takes
seconds on a CPU; no optimisation steps, so there is nothing to resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reverie.data import read_episode, read_manifest
from reverie.io import atomic_write_json, check_writable
from reverie.tokenizer import PatchTokenizerConfig, fit_patch_tokenizer, save_vae
from reverie.training.encode import dataset_resolution

logger = logging.getLogger(__name__)


def _videos(data: Path, rows: list[dict[str, Any]]) -> Iterator[np.ndarray]:
    for row in rows:
        yield read_episode(data / "episodes" / row["id"]).frames  # (T, H, W, 3) uint8


def fit_tokenizer(
    data: str | Path,
    out: str | Path,
    *,
    channels: int = 16,
    patch: int = 4,
    episodes: int = 64,
) -> dict[str, Any]:
    """Fit a ``PatchTokenizer`` on the first ``episodes`` episodes of ``data``; save to ``out``.

    Returns:
        The fit report (also written to ``out/fit_report.json``).

    Raises:
        FileNotFoundError: no dataset manifest. ValueError: an unwritable ``out``, bad sizes, an
        empty dataset, a resolution not divisible by ``patch``.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    data, out = Path(data), Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    check_writable(out / "vae_config.json", "--out")  # before reading any episode
    rows = read_manifest(data)[:episodes]
    height, width = dataset_resolution(data, rows)
    if height % patch or width % patch:
        raise ValueError(f"dataset {data} is {height}x{width}, not a multiple of --patch {patch}")
    config = PatchTokenizerConfig(patch_size=patch, z_dim=channels)
    t0 = time.perf_counter()
    tokenizer, report = fit_patch_tokenizer(_videos(data, rows), config)
    report.update(
        data=str(data),
        episodes=len(rows),
        resolution=[height, width],
        seconds=round(time.perf_counter() - t0, 2),
        config=config.to_dict(),
    )
    save_vae(tokenizer, out)
    atomic_write_json(out / "fit_report.json", report)
    logger.info("fitted patch tokenizer on %d episodes in %.1f s", len(rows), report["seconds"])
    return report
