"""Strict configs: dict <-> dataclass round trips, YAML dialect, dotted overrides, diffs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from reverie.config_utils import (
    apply_overrides,
    config_diff,
    from_dict,
    load_config,
    load_yaml,
    to_dict,
)


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 10
    flag: bool = False
    mode: Mode = Mode.FAST
    kind: Literal["a", "b"] = "a"
    path: Path = Path("runs/x")
    layers: list[int] = field(default_factory=lambda: [1, 2])
    weights: dict[str, float] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_round_trip_of_every_supported_type():
    cfg = Outer(
        name="x",
        steps=3,
        flag=True,
        mode=Mode.SLOW,
        kind="b",
        path=Path("/tmp/run"),
        layers=[4],
        weights={"dmd": 1.0, "reg": 0.5},
        names=("generator", "critic"),
        extra=Inner(lr=2.0),
    )
    data = to_dict(cfg)
    assert (
        data["mode"] == "slow"
        and data["path"] == "/tmp/run"
        and data["names"]
        == [
            "generator",
            "critic",
        ]
    )
    assert from_dict(Outer, data) == cfg
    assert from_dict(Outer, {"name": "y", "inner": {"lr": 1}}).inner == Inner(lr=1.0)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "stepz": 1}, r"config: unknown field\(s\) \['stepz'\] for Outer; known"),
        ({}, r"missing field\(s\) \['name'\]"),
        ({"name": "x", "steps": "3"}, "config.steps: expected an integer, got '3'"),
        ({"name": "x", "steps": 3.0}, "config.steps: expected an integer"),
        ({"name": "x", "flag": 1}, "config.flag: expected true or false"),
        ({"name": "x", "mode": "medium"}, r"config.mode: 'medium' not in \['fast', 'slow'\]"),
        ({"name": "x", "kind": "c"}, r"config.kind: 'c' not in \('a', 'b'\)"),
        ({"name": "x", "inner": {"lr": "fast"}}, "config.inner.lr: expected a number"),
        ({"name": "x", "inner": {"betas": [1.0]}}, "config.inner.betas: expected 2 items"),
        ({"name": "x", "weights": {"dmd": "one"}}, "config.weights.dmd: expected a number"),
        ({"name": "x", "layers": [1, "2"]}, r"config.layers\[1\]: expected an integer"),
        ({"name": "x", "steps": -1}, "config: steps must be >= 0"),
        ({"name": 5}, "config.name: expected a string"),
    ],
)
def test_bad_values_name_their_location(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Outer, data)


def test_yaml_dialect(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninner:\n  lr: 1e-4\n")
    assert load_config(Outer, path).inner.lr == 1e-4  # YAML 1.1 would say "1e-4" (a string)
    path.write_text("name: x\nname: y\n")
    with pytest.raises(ValueError, match="duplicate key 'name'"):
        load_yaml(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_yaml(path)
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_yaml(path)
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_scalars_against_the_field_types():
    data = apply_overrides(
        Outer,
        {"name": "x", "inner": {"lr": 0.1}},
        [
            "inner.lr=3e-4",
            "steps=7",
            "flag=true",
            "name=007",
            "layers=[3, 4]",
            "weights.dmd=0.5",
            "extra.lr=2",
            "path=/data/run",
        ],
    )
    cfg = from_dict(Outer, data)
    assert cfg.inner.lr == 3e-4 and cfg.steps == 7 and cfg.flag is True
    assert cfg.name == "007"  # a string field keeps the raw text
    assert cfg.layers == [3, 4] and cfg.weights == {"dmd": 0.5}
    assert cfg.extra == Inner(lr=2.0) and cfg.path == Path("/data/run")


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.lrr=1", r"unknown config key 'inner.lrr': Inner \(inner\) has no field 'lrr'"),
        ("stepz=1", r"Outer \(the config\) has no field 'stepz'"),
        ("steps.x=1", "steps is a value, not a section"),
        ("steps", "not of the form key=value"),
        ("steps=[1", "cannot parse override value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Outer, {"name": "x"}, [override])


def test_config_diff_lists_changed_leaves():
    old = {"model": {"dim": 16, "depth": 2}, "trainer": {"max_steps": 3}}
    new = {"model": {"dim": 32, "depth": 2}, "trainer": {"max_steps": 6}, "extra": 1}
    assert config_diff(old, new) == [
        ("extra", "<absent>", 1),
        ("model.dim", 16, 32),
        ("trainer.max_steps", 3, 6),
    ]
