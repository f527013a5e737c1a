"""Imports point down: each package of the engine imports only packages of lower layers.

Read from the source with ``ast`` (every import counts: module level, inside functions and
under ``TYPE_CHECKING``), so a new upward import fails here with the offending line named.
(The file name keeps ``pytest -k loop`` selecting it: a layer order has no loops.)
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def _layers() -> tuple[frozenset[str], ...]:
    # Declared once, in pyproject.toml's import-linter contract (`make lint` runs it too);
    # listed highest first there, lowest first here.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return tuple(
        frozenset(name.strip().removeprefix("engine.") for name in layer.split("|"))
        for layer in reversed(layers)
    )


# Lowest first. A package may import its own modules and those of strictly lower layers.
LAYERS = _layers()
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


def test_loop_free_no_private_names_across_modules() -> None:
    # A `_name` stays in its module; a `_module` stays in its package.
    crossing = []
    for package, path in _sources():
        module = ".".join(("engine", *path.relative_to(ENGINE).with_suffix("").parts))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if not node.module.startswith("engine.") or node.module == module:
                continue
            private = [a.name for a in node.names if a.name.startswith("_")]
            other_package = _package(node.module) != package
            if private or (
                other_package and any(part.startswith("_") for part in node.module.split("."))
            ):
                where = f"{path.relative_to(ENGINE.parent)}:{node.lineno}"
                crossing.append(f"{where} {node.module} {private}")
    assert crossing == [], "private names used across modules:\n" + "\n".join(crossing)
