"""Shared types of the evaluation package: items, the benchmark protocol, lengths, data files."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from engine.data.paths import default_data_dir
from engine.errors import ConfigError, DataMissingError
from engine.eval.tokens import get_tokenizer

Unit = Literal["tokens", "chars"]


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question: what the model sees (``query``, ``context``) and how to score it.

    ``gold`` is JSON-serialisable; ``meta`` holds generation details (depth, hidden labels,
    question family, ...) kept out of the model's view.
    """

    bench: str
    length: int
    unit: Unit
    seed: int
    index: int
    query: str
    context: Any
    gold: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Resume key of this item (one result line per key and method)."""
        return f"{self.bench}|{self.length}{self.unit[0]}|{self.seed}|{self.index}"


class Benchmark(Protocol):
    """A named benchmark: a seeded generator or loader plus a scorer."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """``n`` items whose context measures about ``length`` in ``unit``; seed-deterministic."""
        ...

    def score(self, item: EvalItem, prediction: str) -> float:
        """Score of ``prediction`` for ``item`` in [0, 1]."""
        ...


def data_dir() -> Path:
    """The benchmark data directory: ``$RLM_DATA_DIR``, else ``~/.cache/rlm/data``."""
    return default_data_dir()


def data_file(relative: str, *, bench: str) -> Path:
    """Path of a data file under :func:`data_dir`; DataMissingError naming it when absent.

    ``bench`` is the benchmark that needs it, so the message can say how to fetch it.
    """
    path = data_dir() / relative
    if not path.exists():
        raise DataMissingError(
            f"benchmark data file {path} is missing. Fetch it with `rlm data pull {bench}`, or "
            f"import a local copy with `rlm data pull {bench} --from DIR` (the data directory is "
            "$RLM_DATA_DIR, else ~/.cache/rlm/data)."
        )
    return path


def measure_fn(unit: Unit) -> Callable[[str], int]:
    """How a context is measured: ``len`` for chars, a real tokenizer's count for tokens."""
    if unit == "chars":
        return len
    if unit == "tokens":
        return get_tokenizer().count
    raise ConfigError(f"unknown length unit {unit!r}; use tokens or chars")


_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(text: str) -> int:
    """Parse ``8k`` (8 * 1024), ``1m`` (1024 ** 2) or ``5000`` into an int length."""
    match = _LENGTH_RE.match(text)
    if not match:
        raise ConfigError(f"invalid length {text!r}; use a number with optional k/m, e.g. 8k")
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    value = int(float(match.group(1)) * factor)
    if value <= 0:
        raise ConfigError(f"length {text!r} must be positive")
    return value


def parse_lengths(text: str) -> list[int]:
    """Parse a comma-separated list of lengths (``8k,32k``)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError("--lengths is empty; give e.g. 8k,32k")
    return [parse_length(p) for p in parts]


def format_length(value: int) -> str:
    """Inverse of :func:`parse_length` for display (8192 -> ``8k``)."""
    if value % (1024 * 1024) == 0:
        return f"{value // (1024 * 1024)}m"
    if value % 1024 == 0:
        return f"{value // 1024}k"
    return str(value)
