"""CodeQA-style multiple choice over a large real codebase.

The context is the Python source of installed packages, concatenated with a header per file
(``# ===== file: <package/path.py> =====``), cut to the target length at a line boundary.
Questions are generated from the AST of the files that made it into the context: which module
defines a function, which module imports a module, what a function returns, which class a
class derives from. Four options (A-D); scored by accuracy.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import DataMissingError
from engine.eval.base import EvalItem, Unit, measure_fn
from engine.eval.scoring import choice_score

DEFAULT_PACKAGES = ("httpx", "anyio", "starlette", "structlog", "jupyter_client", "uvicorn")
LETTERS = "ABCD"
KINDS = ("defines", "imports", "returns", "base_class")


@dataclass(frozen=True)
class SourceFile:
    """One source file of the corpus: display path and text."""

    path: str
    text: str

    def block(self) -> str:
        return f"# ===== file: {self.path} =====\n{self.text.rstrip()}\n"


@dataclass
class FileFacts:
    """What the AST says about one file."""

    functions: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)
    returns: dict[str, str] = field(default_factory=dict)  # function -> single return expr
    bases: dict[str, str] = field(default_factory=dict)  # class -> single base name


def package_files(packages: tuple[str, ...]) -> list[SourceFile]:
    """Sorted ``.py`` files of the installed ``packages`` (DataMissingError when none is)."""
    files: list[SourceFile] = []
    missing = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            missing.append(name)
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if text.strip():
                files.append(SourceFile(f"{name}/{path.relative_to(root).as_posix()}", text))
    if not files:
        raise DataMissingError(
            f"none of the CodeQA source packages is installed ({', '.join(packages)}); "
            "install one or pass other package names"
        )
    return files


@functools.cache
def _corpus(packages: tuple[str, ...]) -> tuple[SourceFile, ...]:
    return tuple(package_files(packages))


def file_facts(text: str) -> FileFacts:
    """Top-level functions, imported modules, single-return expressions and single bases."""
    facts = FileFacts()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return facts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            facts.imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            facts.imports.add(node.module)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith(
            "__"
        ):
            facts.functions.add(node.name)
            rets = [n for n in ast.walk(node) if isinstance(n, ast.Return)]
            if len(rets) == 1 and rets[0].value is not None:
                expr = ast.unparse(rets[0].value)
                if 3 <= len(expr) <= 80 and "\n" not in expr:
                    facts.returns[node.name] = expr
        elif isinstance(node, ast.ClassDef) and len(node.bases) == 1:
            base = ast.unparse(node.bases[0])
            if len(base) <= 60:
                facts.bases[node.name] = base
    return facts


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[list[str], str] | None:
    distractors = sorted({p for p in pool if p != correct})
    if len(distractors) < 3:
        return None
    options = [correct, *rng.sample(distractors, 3)]
    rng.shuffle(options)
    return options, LETTERS[options.index(correct)]


def make_code_question(
    kind: str, files: list[SourceFile], facts: list[FileFacts], rng: random.Random
) -> tuple[str, list[str], str, dict[str, Any]] | None:
    """(question, options, gold letter, details) or None when ``kind`` has no clean instance."""
    paths = [f.path for f in files]
    if kind == "defines":
        owners: dict[str, list[str]] = defaultdict(list)
        for path, fact in zip(paths, facts, strict=True):
            for fn in fact.functions:
                owners[fn].append(path)
        unique = sorted(fn for fn, where in owners.items() if len(where) == 1)
        if not unique:
            return None
        fn = rng.choice(unique)
        opts = _options(rng, owners[fn][0], paths)
        if opts is None:
            return None
        q = f"Which file defines the top-level function `{fn}`?"
        return q, opts[0], opts[1], {"symbol": fn}
    if kind == "imports":
        importers: dict[str, list[str]] = defaultdict(list)
        for path, fact in zip(paths, facts, strict=True):
            for mod in fact.imports:
                importers[mod].append(path)
        unique = sorted(m for m, where in importers.items() if len(where) == 1)
        if not unique:
            return None
        mod = rng.choice(unique)
        opts = _options(rng, importers[mod][0], [p for p in paths if p != importers[mod][0]])
        if opts is None:
            return None
        return f"Which file imports the module `{mod}`?", opts[0], opts[1], {"symbol": mod}
    if kind == "returns":
        owners_r: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for path, fact in zip(paths, facts, strict=True):
            for fn, expr in fact.returns.items():
                owners_r[fn].append((path, expr))
        candidates = sorted(
            fn
            for fn, where in owners_r.items()
            if len(where) == 1 and sum(fn in f.functions for f in facts) == 1
        )
        if not candidates:
            return None
        fn = rng.choice(candidates)
        path, expr = owners_r[fn][0]
        pool = [e for where in owners_r.values() for _, e in where]
        opts = _options(rng, expr, pool)
        if opts is None:
            return None
        q = f"What does the function `{fn}` (in {path}) return?"
        return q, opts[0], opts[1], {"symbol": fn, "file": path}
    owners_b: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, fact in zip(paths, facts, strict=True):
        for cls, base in fact.bases.items():
            owners_b[cls].append((path, base))
    candidates = sorted(c for c, where in owners_b.items() if len(where) == 1)
    if not candidates:
        return None
    cls = rng.choice(candidates)
    path, base = owners_b[cls][0]
    opts = _options(rng, base, [b for where in owners_b.values() for _, b in where])
    if opts is None:
        return None
    q = f"Which class does the class `{cls}` (in {path}) directly inherit from?"
    return q, opts[0], opts[1], {"symbol": cls, "file": path}


def build_corpus(
    corpus: tuple[SourceFile, ...], length: int, measure: Callable[[str], int], rng: random.Random
) -> tuple[str, list[SourceFile]]:
    """Shuffled whole files until the next would pass ``length``; the last is cut by lines."""
    # Files at most a quarter of the target (by a rough chars estimate) so that even short
    # contexts hold several files to ask about and choose distractors from.
    max_chars = (length if measure is len else length * 4) // 4
    order = [f for f in corpus if len(f.text) <= max_chars] or list(corpus)
    rng.shuffle(order)
    blocks: list[str] = []
    used: list[SourceFile] = []
    size = 0
    for f in order:
        block = f.block()
        cost = measure(block + "\n")
        if size + cost <= length:
            blocks.append(block)
            used.append(f)
            size += cost
            continue
        # Fill the remainder with the head of this file, whole lines only.
        remaining = length - size
        header = f"# ===== file: {f.path} (truncated) =====\n"
        lines = f.text.splitlines(keepends=True)
        lo, hi = 0, len(lines)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(header + "".join(lines[:mid])) <= remaining:
                lo = mid
            else:
                hi = mid - 1
        if lo > 0:
            text = "".join(lines[:lo])
            blocks.append(header + text)
            used.append(SourceFile(f.path, text))
        break
    return "\n".join(blocks), used


class CodeQA:
    """Multiple-choice questions about Python packages' source, generated from the AST."""

    name = "codeqa"
    description = "CodeQA-style multiple choice (A-D) over installed packages' Python source"

    def __init__(self, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> None:
        self.packages = packages

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """``n`` corpora of ``length`` units, each with one question about files in it."""
        corpus = _corpus(self.packages)
        measure = measure_fn(unit)
        versions = {}
        for name in self.packages:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        out = []
        for i in range(n):
            rng = random.Random(f"{self.name}|{length}|{unit}|{seed}|{i}")
            text, used = build_corpus(corpus, length, measure, rng)
            facts = [file_facts(f.text) for f in used]
            first = (seed + i) % len(KINDS)
            made = None
            for k in range(len(KINDS)):
                kind = KINDS[(first + k) % len(KINDS)]
                made = make_code_question(kind, used, facts, rng)
                if made is not None:
                    break
            if made is None:
                raise DataMissingError(
                    f"cannot generate a CodeQA question at length {length} {unit}: the corpus "
                    "slice is too small; use a larger length"
                )
            question, options, gold, details = made
            listed = "\n".join(
                f"({letter}) {opt}" for letter, opt in zip(LETTERS, options, strict=False)
            )
            query = (
                "The context is the source code of several Python packages, one file after "
                "another, each starting with a '# ===== file: <path> =====' header.\n\n"
                f"{question}\n{listed}\n\nGive your final answer in the form 'Answer: <letter>'."
            )
            meta = {
                "kind": kind,
                "options": options,
                "files": [f.path for f in used],
                "versions": versions,
                "context_size": measure(text),
                **details,
            }
            out.append(EvalItem(self.name, length, unit, seed, i, query, text, gold, meta))
        return out

    def score(self, item: EvalItem, prediction: str) -> float:
        """1.0 when the chosen option (by letter, or by stating its text) is the gold one."""
        return choice_score(prediction, item.gold, item.meta.get("options", ()))
