"""Package training runs into a `WorldModel` directory (the last step of the tiny recipe).

    python -m reverie.engine.export --vae runs/default/vae --latents runs/default/latents \
        --student runs/default/student [--mag runs/default/mag] \
        [--retrieval runs/default/retrieval] --out src/reverie/assets/default

The student's EMA weights become `dit/`; the VAE gets the per-channel latent mean/std that
`reverie encode` measured folded into its config, so `VideoVAE.encode` returns exactly the
standardised latents the teacher and student were trained on; `metres_per_unit` is the median
RELIC scale d-bar (Algorithm 1) of the encoded episodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from reverie.engine.config import WorldModelConfig
from reverie.engine.world_model import WorldModel
from reverie.models import WanDiT
from reverie.models.state_dicts import load_state_dict_checked


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Steps and first/last logged losses of a training run (`metrics.jsonl`)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r]
    if not rows:
        return {}
    losses = sorted(k for k in rows[-1] if k.endswith("loss"))
    summary: dict[str, Any] = {"steps": rows[-1]["step"]}
    for key in losses:
        summary[key] = {"first": rows[0].get(key), "last": rows[-1].get(key)}
    return summary


def export(
    *,
    vae: Path,
    latents: Path,
    student: Path,
    out: Path,
    mag: Path | None = None,
    retrieval: Path | None = None,
    mag_block_frames: int = 3,
    provenance: dict[str, Any] | None = None,
) -> WorldModel:
    """Build the `WorldModel` from the runs and `save_pretrained` it to `out`.

    Raises:
        FileNotFoundError / ValueError: a missing run, unfinished encode, misfit weights.
    """
    from reverie.config_utils import from_dict
    from reverie.training.checkpoint import latest_checkpoint, read_checkpoint_config
    from reverie.training.encode import load_trained_vae
    from reverie.training.latents import read_index, read_items
    from reverie.training.stages.dmd import resolve_weights
    from reverie.training.stages.mag import load_memory_model
    from reverie.training.stages.retrieval import load_retrieval_embedder
    from reverie.training.stages.student import StudentConfig

    index = read_index(latents, "latents")
    if "latent_mean" not in index:
        raise ValueError(f"{latents}: encode has not finished (no latent statistics)")
    trained_vae = load_trained_vae(vae).vae
    packaged_vae = trained_vae.with_latent_stats(index["latent_mean"], index["latent_std"])

    weights, backbone = resolve_weights(Path(student), "student")
    ckpt = latest_checkpoint(Path(student)) or Path(student)
    stored = from_dict(StudentConfig, read_checkpoint_config(ckpt)["config"])
    dit = WanDiT(backbone)
    load_state_dict_checked(dit, load_file(str(weights)))

    scales = [meta["action_scale"] for _, meta in read_items(latents, index)]
    memory_model = None if mag is None else load_memory_model(mag, ema=False)
    embedder = None if retrieval is None else load_retrieval_embedder(retrieval)
    memory = {"mag": {"block_frames": mag_block_frames}} if memory_model is not None else {}
    cfg = WorldModelConfig(
        resolution=index["settings"]["resolution"][0],
        fps=int(index.get("fps", 16)),
        timesteps=tuple(stored.schedule.timesteps),
        shift=stored.schedule.shift,
        text_encoder=stored.text.encoder,
        text_options=dict(stored.text.options),
        metres_per_unit=float(statistics.median(scales)),
        memory=memory,
        provenance=provenance or {},
    )
    model = WorldModel(
        cfg, dit, packaged_vae, memory_model=memory_model, retrieval_embedder=embedder
    )
    model.save_pretrained(out)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--latents", type=Path, required=True)
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--mag", type=Path)
    p.add_argument("--retrieval", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--provenance", type=Path, help="JSON file merged into the provenance")
    args = p.parse_args(argv)
    provenance: dict[str, Any] = {}
    if args.provenance is not None:
        provenance.update(json.loads(args.provenance.read_text()))
    runs = {"vae": args.vae, "student": args.student, "mag": args.mag, "retrieval": args.retrieval}
    provenance["runs"] = {k: run_summary(v) for k, v in runs.items() if v is not None}
    export(
        vae=args.vae,
        latents=args.latents,
        student=args.student,
        mag=args.mag,
        retrieval=args.retrieval,
        out=args.out,
        provenance=provenance,
    )
    print(f"saved world model to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
