"""Helpers shared by the training tests (imported by the test modules and spawned workers)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "toy.yaml"

FAST = [
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.device=cpu",
    "model.hidden=16",
    "data.num_samples=64",
    "data.batch_size=8",
]


def toy_args(run_dir: Path, *overrides: str) -> list[str]:
    """Overrides of configs/toy.yaml for a fast toy run in ``run_dir``."""
    return [f"trainer.run_dir={run_dir}", *FAST, *overrides]


def run_toy(run_dir: Path, *overrides: str, resume: bool = False):
    """Train the toy stage; returns the `TrainResult`."""
    from reverie.training import train

    return train("toy", CONFIG, toy_args(run_dir, *overrides), resume=resume)


def weights(run_dir: Path, step: int, name: str = "model") -> dict[str, torch.Tensor]:
    """Tensors of ``<run_dir>/checkpoints/step_<step>/<name>.safetensors``."""
    return load_file(
        str(Path(run_dir) / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors")
    )


def losses(run_dir: Path, key: str = "model/loss") -> dict[int, float]:
    """``{step: loss}`` from metrics.jsonl."""
    from reverie.training import read_metrics

    return {r["step"]: r[key] for r in read_metrics(run_dir) if key in r}


def distributed_worker(rank: int, world: int, ports: list[int], runs: list[list[str]]) -> None:
    """Run ``reverie`` CLI commands as rank ``rank`` of ``world`` (what torchrun sets up)."""
    from reverie.cli import main

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
    )
    for port, argv in zip(ports, runs, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"rank {rank}: reverie {' '.join(argv)} exited with {code}")
