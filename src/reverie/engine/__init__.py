"""The streaming inference engine: `WorldModel` (a packaged model) and `Session` (one stream).

Usage:

    from reverie.engine import WorldModel
    model = WorldModel.from_pretrained()          # the shipped default model
    session = model.start("start.png", "a sunny courtyard", memory="relic", gamma=1.0)
    frames = session.step({"dolly_in"})           # (frames_per_step, 64, 64, 3) uint8
"""

from reverie.engine.config import WorldModelConfig
from reverie.engine.images import load_image
from reverie.engine.session import Session
from reverie.engine.world_model import DEFAULT_MODEL_DIR, WorldModel, resolve_model_dir

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Session",
    "WorldModel",
    "WorldModelConfig",
    "load_image",
    "resolve_model_dir",
]
