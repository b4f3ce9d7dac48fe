"""Strict configs: JSON/YAML dicts <-> nested frozen dataclasses, dotted overrides, diffs.

STYLE §3: configs are frozen dataclasses next to their component; files only set values; unknown
keys and wrong types are errors with the dotted location of the bad value.

    cfg = load_config(ToyStageConfig, "configs/toy.yaml", ["optim.lr=1e-4", "trainer.max_steps=10"])
    to_dict(cfg)          # JSON-ready nested dict; from_dict(ToyStageConfig, ...) inverts it

Supported field types: nested dataclasses, ``bool``, ``int``, ``float`` (ints accepted),
``str``, ``pathlib.Path``, ``Enum``/``StrEnum`` (by value), ``Literal[...]``, ``X | None``
and other unions, ``tuple[X, Y]``, ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]``, ``Any``.
YAML is read with the safe loader (no code), duplicate keys are errors, and ``1e-4`` is a float
(YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


# --------------------------------------------------------------------------- dict -> dataclass
def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build ``cls`` (a dataclass) from a JSON-like nested dict, strictly.

    Missing fields take the dataclass defaults. An already-built instance of a dataclass field
    type is accepted as is.

    Raises:
        ValueError: unknown or missing fields, a value of the wrong type, a value rejected by the
            dataclass's ``__post_init__``; the message starts with the dotted location
            (``config.optim.lr: expected a number, got 'fast'``).
        TypeError: a field annotation this module does not support (a bug in the config class).
    """
    return _build(cls, data, where)


def _build(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        return _build_union(tp, value, where)
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {value!r:.60}")
        return None
    if origin is tuple:
        return _build_tuple(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r:.60}")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if key_tp is not str:
            raise TypeError(f"{where}: only dict[str, X] is supported, got {tp}")
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r:.60}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ValueError(f"{where}: mapping keys must be strings, got {bad[:3]}")
        return {k: _build(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ValueError(f"{where}: {value!r:.60} not in {choices}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            choices = [m.value for m in tp]
            raise ValueError(f"{where}: {value!r:.60} not in {choices}") from None
    return _build_scalar(tp, value, where)


def _init_fields(tp: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(tp) if f.init}


def _build_dataclass(tp: type, value: Any, where: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object for {tp.__name__}, got {value!r:.60}")
    fields = _init_fields(tp)
    unknown = sorted(set(value) - set(fields), key=str)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown} for {tp.__name__}; known: {sorted(fields)}"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in value
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} for {tp.__name__}")
    hints = typing.get_type_hints(tp)
    kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()}
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def _build_union(tp: Any, value: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _build(arg, value, where)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError("; ".join(errors) or f"{where}: bad value {value!r:.60}")


def _build_tuple(tp: Any, value: Any, where: str) -> tuple:
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {value!r:.60}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(
        _build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
    )


def _build_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r:.60}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r:.60}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r:.60}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r:.60}")
        return value
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if not isinstance(value, (str, PurePath)):
            raise ValueError(f"{where}: expected a path string, got {value!r:.60}")
        return tp(value)
    raise TypeError(f"{where}: unsupported config type {tp}")  # a bug in the config definition


# --------------------------------------------------------------------------- dataclass -> dict
def to_dict(obj: Any) -> Any:
    """JSON-ready form of a config: dataclasses -> dicts, enums -> values, paths -> strings,
    tuples -> lists. Inverse of :func:`from_dict`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay leaves)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Leaves that differ between two nested dicts: ``[(dotted_key, old, new)]``, sorted.

    A key present on one side only is reported with ``"<absent>"`` on the other.
    """
    a, b = flatten(old), flatten(new)
    absent = "<absent>"
    return [
        (k, a.get(k, absent), b.get(k, absent))
        for k in sorted(a | b)
        if a.get(k, absent) != b.get(k, absent)
    ]


# --------------------------------------------------------------------------- YAML + overrides
class _Loader(yaml.SafeLoader):
    """Safe YAML loader: ``1e-4`` is a float, duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (values only; see the module docstring for the dialect).

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid YAML, duplicate keys, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """One override value with YAML scalar rules (``3`` int, ``1e-4`` float, ``true``, ``null``,
    ``[1, 2]``). Raises ValueError on invalid YAML."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"cannot parse override value {text!r}: {e}") from e


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied.

    Keys are checked against ``cls``'s field tree before anything is set, values are parsed by
    :func:`parse_value`; a string-typed field keeps the raw text (``name=001`` stays ``"001"``).
    Types are checked later by :func:`from_dict`.

    Raises:
        ValueError: an item without ``=``, an unknown key (naming the known fields), a key that
            descends into a non-section value, an unparsable value.
    """
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        parts = key.split(".")
        leaf = _leaf_type(cls, parts, key)
        value = parse_value(raw)
        if _is_text_type(leaf) and value is not None and not isinstance(value, str):
            value = raw
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """``from_dict(cls, apply_overrides(cls, load_yaml(path), overrides))``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: see :func:`load_yaml`, :func:`apply_overrides`, :func:`from_dict`.
    """
    return from_dict(cls, apply_overrides(cls, load_yaml(path), overrides), "config")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_text_type(tp: Any) -> bool:
    tp = _strip_none(tp)
    return tp is str or (isinstance(tp, type) and issubclass(tp, PurePath))


def _leaf_type(cls: type, parts: list[str], key: str) -> Any:
    tp: Any = cls
    for i, part in enumerate(parts):
        tp = _strip_none(tp)
        here = ".".join(parts[:i]) or "the config"
        if dataclasses.is_dataclass(tp):
            fields = _init_fields(tp)
            if part not in fields:
                raise ValueError(
                    f"unknown config key {key!r}: {tp.__name__} ({here}) has no field "
                    f"{part!r}; known: {sorted(fields)}"
                )
            tp = typing.get_type_hints(tp)[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            raise ValueError(f"override {key!r}: {here} is a value, not a section")
    return tp
