"""Imports point down: each package of the engine imports only packages of lower layers.

Read from the source with ``ast`` (every import counts: module level, inside functions and
under ``TYPE_CHECKING``), so a new upward import fails here with the offending line named.
(The file name keeps ``pytest -k loop`` selecting it: a layer order has no loops.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"

# Lowest first. A package may import its own modules and those of strictly lower layers.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "truncate", "lifecycle", "display"}),
    frozenset({"log", "settings"}),
    frozenset({"models", "data", "contexts", "bridge"}),
    frozenset({"tools", "local", "sandbox"}),
    frozenset({"config"}),
    frozenset({"rlm"}),
    frozenset({"eval", "service"}),
    frozenset({"export"}),
    frozenset({"cli"}),
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def _package(module: str) -> str:
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("engine.")]


def _sources() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ENGINE).with_suffix("").parts
        if parts == ("__init__",) or parts == ("__main__",):
            continue  # the package's lazy public facade re-exports from every layer
        out.append((parts[0], path))
    return out


def test_loop_free_every_package_has_a_layer() -> None:
    packages = {name for name, _ in _sources()}
    assert packages <= set(LAYER), f"give these packages a layer: {sorted(packages - set(LAYER))}"


def test_loop_free_imports_point_down() -> None:
    upward = []
    for package, path in _sources():
        for line, module in _imports(path):
            target = _package(module)
            if target == package:
                continue
            if LAYER.get(target, -1) >= LAYER[package]:
                upward.append(f"{path.relative_to(ENGINE.parent)}:{line} imports {module}")
    assert upward == [], "imports that do not point down:\n" + "\n".join(upward)


def test_loop_free_no_private_names_across_packages() -> None:
    crossing = []
    for package, path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if not node.module.startswith("engine.") or _package(node.module) == package:
                continue
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in node.module.split(".")):
                crossing.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno} {node.module}")
    assert crossing == [], "private names used across packages:\n" + "\n".join(crossing)
