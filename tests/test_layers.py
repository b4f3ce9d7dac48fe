"""Layers never point upward (STYLE §15): an import-graph check of `src/reverie`.

Every `reverie.*` import of every module is read with `ast` (nothing is imported), including
imports inside functions and under `TYPE_CHECKING`, and checked against the layer order:

- inference (`engine`, `memory`, `diffusion`, `models`) imports no training, evaluation,
  play, CLI or explore code;
- `worlds` (procedural scenes) does not import `data` (episodes on disk);
- a training stage (`training/stages/<name>.py`) imports no other stage: what stages share
  lives in the core training modules (`training/common.py`, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "reverie"

INFERENCE = ("reverie.engine", "reverie.memory", "reverie.diffusion", "reverie.models")
ABOVE_INFERENCE = (
    "reverie.training",
    "reverie.evaluation",
    "reverie.play",
    "reverie.cli",
    "reverie.explore",
)
STAGES = "reverie.training.stages"


def module_name(path: Path) -> str:
    """`src/reverie/a/b.py` -> `reverie.a.b`; `src/reverie/a/__init__.py` -> `reverie.a`."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether `name` is a module or package of `src/` (not a class or function)."""
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def reverie_imports(path: Path) -> set[str]:
    """The `reverie` modules `path` imports: `import a.b` gives `a.b`; `from a import b` gives
    `a.b` when `b` is a module, else `a`. Relative imports are resolved."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if is_module(target) else base)
    return {name for name in found if name == "reverie" or name.startswith("reverie.")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Module name -> the `reverie` modules it imports, for every module of `src/reverie`."""
    return {module_name(p): reverie_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def offending(graph: dict[str, set[str]], importer, imported) -> list[tuple[str, str]]:
    return sorted(
        (module, name)
        for module, names in graph.items()
        if importer(module)
        for name in names
        if imported(module, name)
    )


def test_the_graph_sees_every_module(graph):
    assert "reverie.engine.world_model" in graph and "reverie.training.common" in graph
    assert "reverie.models.wan_dit" in graph["reverie.memory.writing"]


def test_inference_does_not_import_training_or_anything_above_it(graph):
    bad = offending(
        graph,
        lambda module: within(module, INFERENCE),
        lambda module, name: within(name, ABOVE_INFERENCE),
    )
    assert not bad, f"inference imports training/evaluation/play/cli/explore: {bad}"


def test_worlds_do_not_import_data(graph):
    bad = offending(
        graph,
        lambda module: within(module, ("reverie.worlds",)),
        lambda module, name: within(name, ("reverie.data",)),
    )
    assert not bad, f"worlds import data (data builds on worlds): {bad}"


def test_stages_import_no_other_stage(graph):
    def is_stage(module: str) -> bool:
        return module.startswith(STAGES + ".")

    bad = offending(
        graph, is_stage, lambda module, name: within(name, (STAGES,)) and name != module
    )
    assert not bad, f"training stages import other stages (move what they share): {bad}"
