"""Training objectives as pure functions of tensors (STYLE §6: apart from networks, samplers and
the trainer). Each cites the paper and equation it implements.

| function | objective | paper |
|---|---|---|
| `flow_matching_loss` | velocity regression | arXiv 2210.02747 eq. 23 (Wan2.1) |
| `dmd_gradient`, `dmd_loss` | distribution matching | arXiv 2311.18828 eq. 7, RELIC §4.4.2 |
| `window_temporal_delta_loss` | retrieval-embedding contrast | LongLive-RAG arXiv 2606.02553 |
| `temporal_smoothness_loss` | embedding smoothness | LongLive-RAG arXiv 2606.02553 |
"""

from reverie.objectives.dmd import dmd_gradient, dmd_loss
from reverie.objectives.flow_matching import flow_matching_loss
from reverie.objectives.temporal_delta import (
    temporal_smoothness_loss,
    window_temporal_delta_loss,
)

__all__ = [
    "dmd_gradient",
    "dmd_loss",
    "flow_matching_loss",
    "temporal_smoothness_loss",
    "window_temporal_delta_loss",
]
