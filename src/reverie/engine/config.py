"""`WorldModelConfig`: what a packaged world model needs besides its weights (STYLE §3).

A packaged model is a directory (`WorldModel.save_pretrained`):

    world_model.json        WorldModelConfig (this file) + provenance
    dit/                    the block-causal few-step student (`reverie.models.save_checkpoint`)
    vae/                    the video tokenizer (`reverie.tokenizer.save_vae`), latent
                            statistics of the training data folded into its config
    memory_model/           optional: MAG's memory model (a `WanDiT` checkpoint)
    retrieval/              optional: LongLive-RAG's frame embedder (safetensors + config)

The optional directories are the learned components memory policies declare
(`reverie.memory.Component`: its `directory`, loader and saver).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reverie.config_utils import from_dict, to_dict

CONFIG_NAME = "world_model.json"


@dataclass(frozen=True)
class WorldModelConfig:
    """How the engine runs a packaged world model.

    Attributes:
        resolution: square frame side in pixels the model was trained at (tiny recipe: 64).
        fps: video frames per second of the training data (16).
        timesteps: the student's few-step schedule on the 0-1000 scale (Self Forcing:
            1000, 750, 500, 250), mapped to flow times with `shift`.
        shift: timestep shift of the schedule (Wan / Self Forcing: 5).
        text_encoder: `reverie.text` encoder name (`minilm` for the tiny recipe).
        text_options: keyword arguments of the text encoder.
        metres_per_unit: metres the camera moves per frame for a translation action of
            magnitude 1 at `gamma = 1`: the median RELIC scale d-bar (Algorithm 1) of the
            training episodes, so unit actions move at the training data's typical speed.
        context_noise: flow time of the cache-write pass (0: the clean block, Self Forcing).
        memory: per-policy keyword overrides (`reverie.memory.get_policy`), e.g.
            `{"mag": {"block_frames": 3}}`.
        provenance: free-form facts recorded at export (runs, steps, data); not read back.
    """

    resolution: int = 64
    fps: int = 16
    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = 5.0
    text_encoder: str = "minilm"
    text_options: dict[str, Any] = field(default_factory=dict)
    metres_per_unit: float = 0.05
    context_noise: float = 0.0
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not self.timesteps or any(not 0 < t <= 1000 for t in self.timesteps):
            raise ValueError(f"timesteps must be in (0, 1000], got {self.timesteps}")
        if not self.metres_per_unit > 0:
            raise ValueError(f"metres_per_unit must be > 0, got {self.metres_per_unit}")
        if not 0 <= self.context_noise < 1:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldModelConfig:
        """Strict inverse of `to_dict`.

        Raises:
            ValueError: on unknown or missing keys and values of the wrong type.
        """
        return from_dict(cls, data, "WorldModelConfig")
