"""Import direction: rooms only import downwards (DESIGN: ops <- models <- engine <- workflows <- cli), no cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "leanvision"

# Usable from everywhere: they import none of the rooms above them (only each other).
BASE = {"__init__", "errors", "registry", "names", "config", "runs", "_io", "_torch",
        "data", "profile", "export", "report", "executors"}  # fmt: skip
WORKFLOWS = {"compress", "search", "calibrate", "augment", "generative"}
LEVEL = {**dict.fromkeys(BASE, 0), "ops": 1, "models": 2, "engine": 3, **dict.fromkeys(WORKFLOWS, 4), "cli": 5}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> set[str]:
    """Every leanvision module ``path`` imports, at the top or inside a function (both count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name) for a in node.names if a.name.startswith("leanvision")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("leanvision"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.add(_resolve(full) if full in MODULES else _resolve(node.module))
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def test_every_room_has_a_level():
    assert {_room(m) for m in MODULES} <= set(LEVEL), "a new room: give it a level in LEVEL (and in DESIGN.md)"


def test_no_import_from_a_higher_room():
    upward = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if _room(t) != _room(m) and LEVEL[_room(t)] >= LEVEL[_room(m)] and _room(m) not in BASE | {"cli"}
    )
    # base modules may import each other but nothing above them
    upward += sorted(f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
                     if _room(m) in BASE and LEVEL[_room(t)] > 0)  # fmt: skip
    assert upward == []


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH.get(v, ()):
            if w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                cycles.append(sorted([v, *comp]))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def _rooms_loaded_by(room: str) -> set[str]:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module('leanvision.{room}')\n"
        "for m in pkgutil.walk_packages(getattr(pkg, '__path__', []), pkg.__name__ + '.'):\n"
        "    if not m.name.endswith('ray_executor'):\n"
        "        importlib.import_module(m.name)\n"
        "print(json.dumps(sorted({n.split('.')[1] for n in sys.modules if n.startswith('leanvision.')})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("room", ["ops", "models", "engine", *sorted(WORKFLOWS)])
def test_importing_a_room_loads_only_rooms_below_it(room):
    loaded = _rooms_loaded_by(room) - {room}
    above = sorted(r for r in loaded if LEVEL.get(r, 0) >= LEVEL[room])
    assert above == [], f"importing leanvision.{room} (all its modules) loaded {above}"


def test_models_do_not_load_search():
    # the NB201 network needs the cell encoding, not the search machinery (journal, strategies, executors)
    assert not {"search", "executors", "engine"} & _rooms_loaded_by("models")
