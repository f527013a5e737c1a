"""What executing code in a sandbox returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CellError:
    """An exception raised by a cell."""

    ename: str
    evalue: str
    traceback: str


@dataclass(frozen=True)
class ContextInfo:
    """How the context was loaded in the kernel, for the root prompt and the caller."""

    kind: str  # "text", "json", "jsonl", "directory" or "none"
    type_name: str
    length_chars: int
    items: int | None
    preview: str
    load_seconds: float
    # What the host's preparation included and skipped (engine.contexts.Manifest.describe).
    notes: str = ""


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one cell."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: CellError | None = None
    duration_s: float = 0.0
    truncated: bool = False
    timed_out: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    def output_text(self) -> str:
        """Everything the cell showed, in the order a notebook user would read it."""
        parts = [self.stdout]
        if self.stderr:
            parts.append(self.stderr)
        if self.result is not None:
            parts.append(self.result)
        if self.error is not None:
            parts.append(self.error.traceback or f"{self.error.ename}: {self.error.evalue}")
        text = "\n".join(part.rstrip("\n") for part in parts if part)
        return text
