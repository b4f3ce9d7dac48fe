"""Who writes MAG's compressed cache, and with which text: revisit PSNR of each choice.

The `mag` policy keeps the K/V of the last latent frame of every `block_frames` frames. MAG
(arXiv 2512.18741 §3.3-3.4) writes that cache with a trained memory model and the empty prompt
(§3.2). This runs `reverie eval revisit` (the MAG-Bench-style return leg, held-out scenes) for
`mag` under each combination of writer (`memory_model`: a trained MAG memory model from
`--memory-model RUN`; `generator`: the generator itself) and write text (`empty` or the scene
`caption`), plus `window` as the reference, all with the same generation seed. A variant
without a memory model to load is skipped.

    python benchmarks/mag_write_ablation.py --scenes 16 --memory-model runs/v5/mag \
        --out benchmarks/results/mag_write_ablation.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import date

import torch

from reverie.engine.world_model import WorldModel
from reverie.evaluation.revisit import RevisitConfig, run_revisit
from reverie.io import atomic_write_json
from reverie.runtime import setup_runtime
from reverie.training.stages.mag import memory_model_from_run

KEYS = ("psnr_gt", "revisit_psnr_gt", "revisit_psnr_history", "revisit_ssim_history")


def run(model: WorldModel, cfg: RevisitConfig, policy: str, options: dict) -> dict:
    """Summary of one revisit run of ``policy`` with ``memory_options``."""
    start = model.start

    def patched(*args, **kwargs):
        kwargs["memory_options"] = options
        return start(*args, **kwargs)

    model.start = patched
    try:
        result = run_revisit(model, cfg, progress=False)
    finally:
        model.start = start
    summary = result["policies"][policy]["summary"]
    return {k: round(float(summary[k]), 3) for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="world model (default: shipped)")
    parser.add_argument("--memory-model", default=None, help="a `reverie train mag` run")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_runtime(threads=args.threads, log_level="WARNING")
    model = WorldModel.from_pretrained(args.checkpoint)
    memory_model = memory_model_from_run(args.memory_model) if args.memory_model else None
    cfg = dict(scenes=args.scenes, seconds=args.seconds, seed=args.seed)
    variants = {}
    for writer in ("memory_model", "generator"):
        if writer == "memory_model" and memory_model is None:
            continue
        for text in ("empty", "caption"):
            options = {
                "writer": memory_model if writer == "memory_model" else None,
                "write_with_empty_text": text == "empty",
            }
            name = f"{writer}, {text} text"
            variants[name] = run(model, RevisitConfig(policies=("mag",), **cfg), "mag", options)
            print(name, json.dumps(variants[name]), flush=True)
    variants["window (reference)"] = run(
        model, RevisitConfig(policies=("window",), **cfg), "window", {}
    )
    result = {
        "benchmark": "mag_write_ablation",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "checkpoint": args.checkpoint or "default",
        "memory_model": args.memory_model,
        "mag_config": model.config.memory.get("mag", {}),
        "config": cfg,
        "variants": variants,
    }
    print(json.dumps(result, indent=2))
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
