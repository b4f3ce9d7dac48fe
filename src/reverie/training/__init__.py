"""Training: one loop shared by every stage, stages registered by name (STYLE §5, §6).

    reverie train toy --config configs/toy.yaml trainer.max_steps=20 optim.lr=1e-3
    reverie train toy --config configs/toy.yaml --resume
    torchrun --standalone --nproc_per_node 2 -m reverie.cli train toy \
        --config configs/toy.yaml trainer.distributed=ddp trainer.device=cpu

- `stage.py`: the `Stage` protocol, `register_stage` / `get_stage`.
- `trainer.py`: `Trainer`, `train`, `load_experiment`.
- `config.py`: `TrainerConfig`, `OptimConfig`, `build_optimizer`.
- `checkpoint.py`, `ema.py`, `distributed.py`, `data.py`, `seeding.py`, `metrics.py`.
- `common.py`: what several stages share (backbone/text/latent-clip configs, reading other
  stages' checkpoints); `frame_clips.py` (the clips of `mag` and `retrieval`) and
  `trajectories.py` (the `ode` shards the `student` reads). Stages import these, never another
  stage.
- `stages/`: the registered stages (`stages/__init__.py` lists them).
- `export.py`: training runs -> a packaged `WorldModel` (`python -m reverie.training.export`).
"""

from reverie.training import stages
from reverie.training.config import OptimConfig, TrainerConfig, build_optimizer
from reverie.training.data import check_dataset, make_loader
from reverie.training.distributed import DistContext
from reverie.training.ema import EMA
from reverie.training.metrics import read_metrics
from reverie.training.stage import Stage, get_stage, register_stage, stage_names
from reverie.training.trainer import Trainer, TrainResult, load_experiment, train

__all__ = [
    "EMA",
    "DistContext",
    "OptimConfig",
    "Stage",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "build_optimizer",
    "check_dataset",
    "get_stage",
    "load_experiment",
    "make_loader",
    "read_metrics",
    "register_stage",
    "stage_names",
    "stages",
    "train",
]
