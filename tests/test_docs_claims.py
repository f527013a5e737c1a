"""The README and docs/ name things a reader acts on: flags, ``RLM_*`` variables, make targets,
files, modules, dependencies. Each must exist in the code, so a rename cannot leave the docs
pointing at nothing. Pure reads of the repository: no Docker, no network.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from engine.settings import SETTINGS

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
#: Where a documented name may be defined.
CODE_ROOTS = ("engine", "benchmarks", "sandbox-image", "deploy", "scripts", "tests")
#: Flags the docs quote from other programs (Docker's hardening, gVisor's runtime arguments).
FOREIGN_FLAGS = frozenset({"--cap-drop", "--read-only", "--pids-limit", "--network"})
#: Paths that exist in the built wheel, not in the checkout (pyproject's force-include).
WHEEL_ONLY = frozenset({"engine/_sandbox_image"})


@cache
def _docs_text() -> dict[str, str]:
    return {str(path.relative_to(REPO)): path.read_text(encoding="utf-8") for path in DOCS}


@cache
def _code_text() -> str:
    parts = [(REPO / name).read_text(encoding="utf-8") for name in ("Makefile",)]
    parts.append((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    for root in CODE_ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".sh", ".conf", ".toml", ".js", ""):
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def _found(pattern: str) -> list[tuple[str, str]]:
    """(doc, match) for every match of ``pattern`` in the docs."""
    return [
        (doc, match.group(1) if match.groups() else match.group())
        for doc, text in _docs_text().items()
        for match in re.finditer(pattern, text)
    ]


def _undefined(pattern: str, known: set[str]) -> list[tuple[str, str]]:
    """(doc, name) for names matching ``pattern`` in the docs that are neither ``known`` nor
    written anywhere in the code."""
    named = _found(pattern)
    assert named, f"the docs name nothing like {pattern}: is the pattern still right?"
    code = _code_text()
    return sorted({(doc, name) for doc, name in named if name not in known and name not in code})


@pytest.mark.parametrize(
    ("pattern", "known"),
    [
        (r"(?<![\w-])--[a-z][a-z0-9-]+", {s.flag_name for s in SETTINGS} | FOREIGN_FLAGS),
        (r"\bRLM_[A-Z0-9_]*[A-Z0-9]\b", {s.env for s in SETTINGS}),
    ],
    ids=["flags", "environment"],
)
def test_every_documented_flag_and_variable_exists(pattern: str, known: set[str]) -> None:
    missing = _undefined(pattern, known)
    assert not missing, f"named in the docs but defined and read nowhere: {missing}"


def test_every_documented_make_target_exists() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named = _found(r"`make ([a-z][a-z0-9-]*[a-z0-9])(?![\w*-])")  # `make eval-*` is a family
    assert named, "the docs name make targets as `make TARGET`"
    missing = sorted((doc, target) for doc, target in named if target not in targets)
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"


def test_every_documented_repository_path_exists() -> None:
    roots = "|".join(re.escape(root) for root in (*CODE_ROOTS, "docs"))
    named = _found(rf"`((?:{roots})/[\w./-]*\w)`")
    assert named
    missing = sorted(
        (doc, path) for doc, path in named if path not in WHEEL_ONLY and not (REPO / path).exists()
    )
    assert not missing, f"paths named in the docs that do not exist: {missing}"


def _module_file(dotted: str) -> Path | None:
    path = REPO.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_every_documented_engine_module_or_name_exists() -> None:
    problems = []
    for doc, dotted in _found(r"`(engine(?:\.\w+)+)"):
        if _module_file(dotted) is not None:
            continue
        # engine.pkg.module.name: the longest importable prefix must define the rest's first part
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = _module_file(".".join(parts[:cut]))
            if module is not None:
                if not re.search(rf"\b{re.escape(parts[cut])}\b", module.read_text("utf-8")):
                    problems.append((doc, dotted))
                break
        else:
            problems.append((doc, dotted))
    assert not problems, f"engine modules or names in the docs that do not exist: {problems}"


def _engine_parts() -> set[str]:
    """engine.X for every package and top-level module of the engine."""
    parts = set()
    for path in (REPO / "engine").iterdir():
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py" or (path / "__init__.py").is_file():
            parts.add(f"engine.{path.stem}")
    return parts


def test_architecture_describes_every_engine_package() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = architecture.split("## Packages", 1)[1].split("\n## ", 1)[0]
    missing = sorted(part for part in _engine_parts() if f"`{part}`" not in table)
    assert not missing, f"docs/architecture.md's package table leaves out {missing}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_dependencies_doc_lists_every_runtime_dependency() -> None:
    doc = (REPO / "docs" / "dependencies.md").read_text(encoding="utf-8").lower()
    table = doc.split("## runtime dependencies", 1)[1].split("\n## ", 1)[0]
    dependencies = _pyproject()["dependencies"]
    assert isinstance(dependencies, list)
    missing = sorted(
        name
        for name in map(_requirement_name, dependencies)
        if not re.search(rf"(^|[\s|,]){re.escape(name)}([\s|,\[]|$)", table, re.MULTILINE)
    )
    assert not missing, f"docs/dependencies.md does not say why the engine needs {missing}"


#: Imported only inside a guard that names what to install (optional file formats, a fallback
#: tokenizer that litellm brings along).
UNDECLARED_OPTIONAL = frozenset({"pyarrow", "tokenizers"})
#: Import name -> distribution, for a module whose extra is not installed here.
DISTRIBUTION_OF = {
    "docx": "python-docx",
    "zmq": "pyzmq",
    "yoyo": "yoyo-migrations",
    "rlm": "rlms",
    "psycopg_pool": "psycopg-pool",
    "tiktoken_ext": "tiktoken",
}


def test_every_third_party_import_of_the_engine_is_declared() -> None:
    project = _pyproject()
    declared = {_requirement_name(r) for r in project["dependencies"]}  # type: ignore[union-attr]
    for extra in project["optional-dependencies"].values():  # type: ignore[union-attr]
        declared |= {_requirement_name(r) for r in extra}
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in (REPO / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "engine" or top in sys.stdlib_module_names:
                    continue
                if top in UNDECLARED_OPTIONAL:
                    continue
                fallback = [DISTRIBUTION_OF.get(top, top)]
                dists = {d.lower() for d in distributions.get(top, fallback)}
                if not dists & declared:
                    undeclared.add((top, str(path.relative_to(REPO))))
    assert not undeclared, f"imported by the engine but not declared in pyproject: {undeclared}"


@pytest.mark.parametrize("doc", [str(path.relative_to(REPO)) for path in DOCS])
def test_every_local_link_resolves(doc: str) -> None:
    text = _docs_text()[doc]
    base = (REPO / doc).parent
    missing = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        if "://" not in target and not (base / target).exists()
    ]
    assert not missing, f"{doc} links to files that do not exist: {missing}"


def test_readme_anchors_resolve() -> None:
    readme = _docs_text()["README.md"]
    # GitHub's anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'.
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)
    }
    missing = sorted(set(re.findall(r"\]\(#([^)]+)\)", readme)) - anchors)
    assert not missing, f"README links to sections that do not exist: {missing}"
