"""``<run_dir>/metrics.jsonl``: one JSON object per logged step (``{"step": 10, ...}``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from reverie.io import atomic_write_text

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL metrics of a run, truncated to the resumed step on resume.

    Args:
        run_dir: the run directory.
        resume_step: rows with ``step > resume_step`` (logged after the checkpoint a run resumes
            from) are dropped so that the file reads like one uninterrupted run; None starts a
            new file.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None) -> None:
        self.path = Path(run_dir) / METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (must contain ``"step"``) and flush."""
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics file (or of ``<run_dir>/metrics.jsonl`` given the run dir); a partial
    last line (a crash while writing) is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    rows = []
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines):
                raise
            logger.warning("skipping a partial last line of %s", path)
    return rows
