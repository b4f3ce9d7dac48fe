"""Training checkpoints: written atomically, the newest ``keep`` kept, resumable bit for bit.

Layout of ``<run_dir>/checkpoints/step_00000300/``:

    <module>.safetensors       weights of each of the stage's modules (unsharded, CPU)
    <module>.ema.safetensors   EMA weights of the modules in ``trainer.ema_modules``
    optimizer.pt               optimizer + scheduler state dicts (torch.save, weights_only-loadable)
    rng_rank<r>.pt             python/numpy/torch/CUDA RNG states of rank r
    trainer_state.json         step, world size, the stage's extra state
    config.json                {"stage": name, "config": the experiment config}

Every rank writes into ``.tmp-step_XXXXXXXX`` and rank 0 renames it to ``step_XXXXXXXX`` once
all files are flushed, so a crash at any point leaves either no checkpoint or a complete one.
Under FSDP the weights and optimizer state are gathered into full tensors, so a checkpoint can be
resumed with any world size and any ``distributed`` mode.

A checkpoint damaged after the fact (a truncated file from a full disk or a lost write cache, an
empty ``trainer_state.json``) is found by :func:`verify_checkpoint` before it is loaded; resume
then falls back to the newest intact one (:func:`latest_intact_checkpoint`) and moves the
damaged ones aside as ``damaged-step_XXXXXXXX``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from reverie.config_utils import config_diff
from reverie.io import atomic_write_json, check_safetensors
from reverie.training.distributed import DistContext, full_tensor, unwrap
from reverie.training.ema import EMA
from reverie.training.seeding import rng_state, set_rng_state
from reverie.training.stage import Stage

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_PREFIX = "step_"
_TMP = ".tmp-"
_DAMAGED = "damaged-"
_JSON_FILES = ("trainer_state.json", "config.json")


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file.

    Raises:
        ValueError: naming the file: missing, empty or not a JSON object.
    """
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise ValueError(f"{path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def verify_checkpoint(ckpt: str | Path) -> str | None:
    """Why ``ckpt`` cannot be resumed (naming the file), or None if it looks intact.

    Reads headers only: every JSON file parses, every safetensors file holds all its tensors'
    bytes (`reverie.io.check_safetensors`), ``optimizer.pt`` is a complete zip archive.
    """
    ckpt = Path(ckpt)
    try:
        for name in _JSON_FILES:
            _read_json(ckpt / name)
        for path in sorted(ckpt.glob("*.safetensors")):
            check_safetensors(path)
        optim = ckpt / "optimizer.pt"
        if not optim.is_file():
            return f"{optim} is missing"
        try:
            with zipfile.ZipFile(optim) as archive:  # the directory sits at the end of the file
                entries = archive.infolist()
            end = max((i.header_offset + i.compress_size for i in entries), default=0)
        except zipfile.BadZipFile as e:
            return f"{optim} is truncated or corrupt ({e})"
        if end > optim.stat().st_size:
            return f"{optim} is truncated"
    except (ValueError, OSError) as e:
        return str(e)
    return None


def latest_intact_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes :func:`verify_checkpoint`, and the newer damaged ones
    with the reason each was skipped (newest first)."""
    damaged = []
    for ckpt in reversed(checkpoint_dirs(run_dir)):
        reason = verify_checkpoint(ckpt)
        if reason is None:
            return ckpt, damaged
        damaged.append((ckpt, reason))
    return None, damaged


def set_aside(ckpt: Path) -> Path:
    """Rename a damaged checkpoint to ``damaged-step_XXXXXXXX`` (kept for inspection, no longer
    listed); returns the new path."""
    target = ckpt.with_name(_DAMAGED + ckpt.name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(ckpt, target)
    return target


def read_checkpoint_config(ckpt: str | Path) -> dict[str, Any]:
    """``{"stage": ..., "config": {...}}`` of a checkpoint.

    Raises:
        ValueError: naming ``config.json`` if it is missing, empty or corrupt.
    """
    return _read_json(Path(ckpt) / "config.json")


def check_compatible(
    ckpt: Path, stage: str, config: dict[str, Any], resumable: tuple[str, ...]
) -> None:
    """Refuse to resume ``ckpt`` with another stage or a config that differs outside the
    ``resumable`` prefixes.

    Raises:
        ValueError: naming the checkpoint and every mismatching key with both values.
    """
    stored = read_checkpoint_config(ckpt)
    if stored["stage"] != stage:
        raise ValueError(f"checkpoint {ckpt} is of stage {stored['stage']!r}, not {stage!r}")
    diffs = [
        (k, a, b)
        for k, a, b in config_diff(stored["config"], config)
        if not any(k == p or k.startswith(p + ".") for p in resumable)
    ]
    if diffs:
        lines = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs[:10])
        raise ValueError(
            f"cannot resume from {ckpt}: the config differs ({lines}). Use the checkpoint's "
            f"config or another trainer.run_dir"
        )


def _gather_model(module: nn.Module, dist: DistContext) -> dict[str, torch.Tensor]:
    if dist.mode == "fsdp":  # a collective: every rank takes part, rank 0 gets the tensors
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(module, options=opts)
    return {
        k: full_tensor(v).detach().cpu().clone() for k, v in unwrap(module).state_dict().items()
    }


def _optimizer_states(stage: Stage, dist: DistContext) -> dict[str, Any]:
    """Optimizer state dicts keyed by parameter name (``<module>.<param>``) in every mode, so a
    checkpoint moves between ``none``, ``ddp`` and ``fsdp``."""
    root = nn.ModuleDict({k: unwrap(m) for k, m in stage.modules().items()})
    if dist.mode != "fsdp":
        return {name: _by_name(opt, root) for name, opt in stage.optimizers().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {
        name: get_optimizer_state_dict(root, opt, options=opts)
        for name, opt in stage.optimizers().items()
    }


def _param_order(opt: torch.optim.Optimizer, root: nn.Module) -> list[str]:
    names = {id(p): n for n, p in root.named_parameters()}
    params = [p for group in opt.param_groups for p in group["params"]]
    if any(id(p) not in names for p in params):
        raise ValueError("an optimizer holds a parameter outside the stage's modules()")
    return [names[id(p)] for p in params]


def _by_name(opt: torch.optim.Optimizer, root: nn.Module) -> dict[str, Any]:
    order = _param_order(opt, root)
    sd = opt.state_dict()
    return {
        "state": {order[i]: s for i, s in sd["state"].items()},
        "param_groups": [
            {**g, "params": [order[i] for i in g["params"]]} for g in sd["param_groups"]
        ],
    }


def _from_names(opt: torch.optim.Optimizer, root: nn.Module, sd: dict[str, Any]) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(_param_order(opt, root))}
    unknown = sorted(set(sd["state"]) - set(index))
    if unknown:
        raise ValueError(f"optimizer state for parameters this stage does not have: {unknown[:5]}")
    return {
        "state": {index[n]: s for n, s in sd["state"].items()},
        "param_groups": [
            {**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]
        ],
    }


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())


def save_checkpoint(
    run_dir: Path,
    step: int,
    micro_batches: int,
    stage: Stage,
    ema: EMA | None,
    dist: DistContext,
    config: dict[str, Any],
    keep: int,
) -> Path:
    """Write the checkpoint of ``step`` atomically and delete all but the newest ``keep``.

    ``micro_batches`` is the number of global micro-batches consumed so far (where the data
    stream restarts on resume).

    Every rank must call it (it gathers sharded tensors and writes per-rank RNG files).

    Returns:
        The checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f"{_TMP}{final.name}"
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    torch.save(rng_state(), tmp / f"rng_rank{dist.rank}.pt")
    if dist.is_main or dist.mode == "fsdp":  # gathering shards is a collective under FSDP
        weights = {name: _gather_model(m, dist) for name, m in stage.modules().items()}
        ema_weights = {name: ema.full_state_dict(name) for name in ema.shadow} if ema else {}
        optim = {
            "optimizers": _optimizer_states(stage, dist),
            "schedulers": {k: s.state_dict() for k, s in stage.schedulers().items()},
        }
    if dist.is_main:
        for name, tensors in weights.items():
            save_file(tensors, str(tmp / f"{name}.safetensors"))
        for name, tensors in ema_weights.items():
            save_file(tensors, str(tmp / f"{name}.ema.safetensors"))
        torch.save(optim, tmp / "optimizer.pt")
        state = {
            "step": step,
            "micro_batches": micro_batches,
            "world_size": dist.world_size,
            "extra": stage.extra_state(),
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
        (tmp / "config.json").write_text(
            json.dumps({"stage": stage.name, "config": config}, indent=2) + "\n"
        )
    dist.barrier()
    if dist.is_main:
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    dist.barrier()
    return final


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Delete ``.tmp-*`` directories left by a crash during a save (call on rank 0)."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_TMP):
                shutil.rmtree(p, ignore_errors=True)


def _check_fits(ckpt: Path, name: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    here = {k: tuple(v.shape) for k, v in unwrap(module).state_dict().items()}
    there = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k}" for k in sorted(set(here) - set(there))][:5]
    problems += [f"unexpected {k}" for k in sorted(set(there) - set(here))][:5]
    problems += [
        f"{k} is {there[k]} in the checkpoint, {here[k]} here"
        for k in sorted(set(here) & set(there))
        if here[k] != there[k]
    ][:5]
    if problems:
        raise ValueError(f"checkpoint {ckpt}: module {name!r} does not fit: {'; '.join(problems)}")


def load_checkpoint(ckpt: Path, stage: Stage, ema: EMA | None, dist: DistContext) -> dict[str, Any]:
    """Restore weights, EMA, optimizers, schedulers, RNG and the stage's extra state.

    Returns:
        The checkpoint's ``trainer_state.json``: ``step``, ``micro_batches``, ``world_size``,
        ``extra``.

    Raises:
        ValueError: a module or EMA that does not fit the checkpoint (names the tensors), a
            missing file.
    """
    modules = stage.modules()
    for name, module in modules.items():
        path = ckpt / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(f"checkpoint {ckpt} has no weights for module {name!r}")
        check_safetensors(path)
        tensors = load_file(str(path))
        _check_fits(ckpt, name, module, tensors)
        if dist.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(module, tensors, options=StateDictOptions(full_state_dict=True))
        else:
            unwrap(module).load_state_dict(tensors)
    if ema is not None:
        for name in ema.shadow:
            path = ckpt / f"{name}.ema.safetensors"
            if not path.is_file():
                raise ValueError(f"checkpoint {ckpt} has no EMA of module {name!r}")
            ema.load_full_state_dict(name, load_file(str(path)))
    try:
        optim = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"{ckpt / 'optimizer.pt'} cannot be read ({e})") from e
    _load_optimizers(stage, optim["optimizers"], dist)
    for name, sched in stage.schedulers().items():
        sched.load_state_dict(optim["schedulers"][name])
    state = _read_json(ckpt / "trainer_state.json")
    stage.load_extra_state(state["extra"])
    rng_path = ckpt / f"rng_rank{dist.rank}.pt"
    if rng_path.is_file():
        set_rng_state(torch.load(rng_path, weights_only=True))
    else:  # resumed on more ranks than were saved: deterministic, but a new stream
        logger.warning("%s has no RNG state for rank %d; reseeding", ckpt, dist.rank)
        torch.manual_seed(state["step"] * 1_000_003 + dist.rank)
    logger.info("resumed from %s (step %d)", ckpt, state["step"])
    return state


def _load_optimizers(stage: Stage, states: dict[str, Any], dist: DistContext) -> None:
    optimizers = stage.optimizers()
    if set(states) != set(optimizers):
        raise ValueError(f"checkpoint optimizers {sorted(states)} != stage's {sorted(optimizers)}")
    root = nn.ModuleDict({k: unwrap(m) for k, m in stage.modules().items()})
    for name, opt in optimizers.items():
        if dist.mode != "fsdp":
            opt.load_state_dict(_from_names(opt, root, states[name]))
            continue
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            root, opt, states[name], options=StateDictOptions(full_state_dict=True)
        )


def write_run_config(run_dir: Path, stage: str, config: dict[str, Any]) -> None:
    """``<run_dir>/config.json``: the resolved config of the latest launch (for humans)."""
    atomic_write_json(Path(run_dir) / "config.json", {"stage": stage, "config": config})
