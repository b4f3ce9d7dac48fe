"""Package training runs into a `WorldModel` directory (the last step of the tiny recipe).

    python -m reverie.training.export --vae runs/default/vae --latents runs/default/latents \
        --student runs/default/student [--mag runs/default/mag] \
        [--retrieval runs/default/retrieval] [--memory '{"relic": {"max_tokens": 400}}'] \
        --out src/reverie/assets/default

The student's EMA weights become `dit/`; the VAE gets the per-channel latent mean/std that
`reverie encode` measured folded into its config, so `VideoVAE.encode` returns exactly the
standardised latents the teacher and student were trained on; `metres_per_unit` is the median
RELIC scale d-bar (Algorithm 1) of the encoded episodes. Each `--<stage>` run of a stage that
trains a learned memory component (`Stage.component`: `mag` MAG's memory model, `retrieval`
the LongLive-RAG embedder) becomes that component (`Stage.export_component`), saved with the
`reverie.memory.Component` its policy declares. `--memory` sets memory-policy defaults of the
package (`WorldModelConfig.memory`, config fields by policy name), over those a component brings.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from reverie.engine.config import WorldModelConfig
from reverie.engine.world_model import WorldModel
from reverie.memory import get_policy
from reverie.models import WanDiT
from reverie.models.state_dicts import load_state_dict_checked
from reverie.training.checkpoint import latest_checkpoint, read_checkpoint_config
from reverie.training.common import resolve_weights, stored_stage_config
from reverie.training.encode import load_trained_vae
from reverie.training.latents import read_index, read_items
from reverie.training.stage import get_stage, stage_names


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


def check_policy_options(name: str, fields: Mapping[str, Any]) -> None:
    """Raise ValueError unless `get_policy(name, **fields)` builds a policy (a known name,
    known fields, valid values)."""
    try:
        get_policy(name, **fields)
    except KeyError as e:
        raise ValueError(e.args[0]) from e
    except TypeError as e:
        raise ValueError(f"bad options for memory policy {name!r}: {e}") from e


def component_stages() -> list[str]:
    """The registered stages whose runs train a packaged memory component, sorted."""
    return [name for name in stage_names() if get_stage(name).component is not None]


def export(
    *,
    vae: Path,
    latents: Path,
    student: Path,
    out: Path,
    component_runs: Mapping[str, Path] | None = None,
    memory_options: Mapping[str, Mapping[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> WorldModel:
    """Build the `WorldModel` from the runs and `save_pretrained` it to `out`.

    Args:
        component_runs: training runs by stage name, for stages of `component_stages()`
            (e.g. `{"mag": Path("runs/mag"), "retrieval": Path("runs/retrieval")}`).
        memory_options: config fields by policy name (e.g. `{"relic": {"max_tokens": 400}}`),
            merged over the options the components bring.

    Raises:
        FileNotFoundError / ValueError: a missing run, unfinished encode, misfit weights, a
            stage that trains no component, an unknown policy or config field.
    """
    index = read_index(latents, "latents")
    if "latent_mean" not in index:
        raise ValueError(f"{latents}: encode has not finished (no latent statistics)")
    trained_vae = load_trained_vae(vae).vae
    packaged_vae = trained_vae.with_latent_stats(index["latent_mean"], index["latent_std"])

    weights, backbone = resolve_weights(Path(student), "student")
    ckpt = latest_checkpoint(Path(student)) or Path(student)
    stored = stored_stage_config("student", read_checkpoint_config(ckpt)["config"])
    dit = WanDiT(backbone)
    load_state_dict_checked(dit, load_file(str(weights)))

    scales = [meta["action_scale"] for _, meta in read_items(latents, index)]
    components, memory = {}, {}
    for name, run in (component_runs or {}).items():
        stage = get_stage(name)
        if stage.component is None:
            raise ValueError(f"stage {name!r} trains no component; use {component_stages()}")
        components[stage.component], options = stage.export_component(Path(run))
        memory.update(options)
    for name, fields in (memory_options or {}).items():
        check_policy_options(name, fields)
        memory[name] = {**memory.get(name, {}), **fields}
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
    model = WorldModel(cfg, dit, packaged_vae, components=components)
    model.save_pretrained(out)
    return model


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('expected {"policy": {"field": value}, ...}')
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--latents", type=Path, required=True)
    p.add_argument("--student", type=Path, required=True)
    for name in component_stages():
        component = get_stage(name).component
        p.add_argument(f"--{name}", type=Path, help=f"a {name} run (packages its {component})")
    p.add_argument(
        "--memory",
        type=_json_object,
        default=None,
        help='memory-policy defaults as JSON, e.g. \'{"relic": {"max_tokens": 400}}\'',
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--provenance", type=Path, help="JSON file merged into the provenance")
    args = p.parse_args(argv)
    provenance: dict[str, Any] = {}
    if args.provenance is not None:
        provenance.update(json.loads(args.provenance.read_text()))
    component_runs = {
        name: vars(args)[name] for name in component_stages() if vars(args)[name] is not None
    }
    runs = {"vae": args.vae, "student": args.student, **component_runs}
    provenance["runs"] = {k: run_summary(v) for k, v in runs.items()}
    export(
        vae=args.vae,
        latents=args.latents,
        student=args.student,
        component_runs=component_runs,
        memory_options=args.memory,
        out=args.out,
        provenance=provenance,
    )
    print(f"saved world model to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
