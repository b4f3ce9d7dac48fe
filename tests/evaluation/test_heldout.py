"""Held-out scene seeds stay apart from training scenes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from reverie.data.render_job import episode_seeds
from reverie.evaluation.heldout import (
    EVAL_SCENE_SEED_BASE,
    check_disjoint,
    gamma_for,
    heldout_scene_seed,
    heldout_trajectory_seed,
    training_scene_seeds,
)


def test_seed_ranges():
    assert heldout_scene_seed(3) == EVAL_SCENE_SEED_BASE + 3
    seeds = {heldout_trajectory_seed(i, a) for i in range(3) for a in range(5)}
    assert len(seeds) == 15
    with pytest.raises(ValueError):
        heldout_trajectory_seed(0, 1000)
    with pytest.raises(ValueError):
        heldout_scene_seed(-1)
    # The default training dataset (seed 0) does not use the first held-out scene seeds.
    train = {episode_seeds(0, i)[0] for i in range(2000)}
    assert not train & {heldout_scene_seed(i) for i in range(100)}


def test_check_disjoint(tmp_path):
    rows = [{"id": "000000", "scene_seed": 5}, {"id": "000001", "scene_seed": 1_000_002}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_scene_seeds(tmp_path) == {5, 1_000_002}
    check_disjoint([1_000_000, 1_000_001], tmp_path)
    check_disjoint([1_000_002], None)
    with pytest.raises(ValueError, match="1000002"):
        check_disjoint([1_000_002], tmp_path / "manifest.jsonl")
    with pytest.raises(FileNotFoundError):
        check_disjoint([1], tmp_path / "missing")


def test_gamma_replays_the_path_scale():
    model = SimpleNamespace(config=SimpleNamespace(metres_per_unit=0.05))
    assert gamma_for(model, 0.025) == pytest.approx(0.5)
