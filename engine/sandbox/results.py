"""What executing code in a sandbox returns: the typed contract between the kernel and the loop."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


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

    @classmethod
    def none(cls) -> ContextInfo:
        """The description of a task without context."""
        return cls("none", "NoneType", 0, None, "None", 0.0)


@dataclass(frozen=True)
class KernelState:
    """The runtime's report after a cell (``rlm_runtime.state()`` inside the sandbox).

    ``answer_content``/``answer_ready`` mirror the kernel's ``answer`` dict; ``context_restored``
    says the cell reassigned ``context`` and the runtime put it back; ``output_dropped`` counts
    characters the in-kernel output cap dropped.
    """

    answer_content: str = ""
    answer_ready: bool = False
    context_restored: bool = False
    output_dropped: int = 0

    @classmethod
    def parse(cls, payload: object) -> KernelState:
        """Read the runtime's JSON report; anything malformed is an empty, unfinished answer.

        The sandbox is untrusted (the user can break the runtime module itself), so every
        field is type-checked instead of trusted.
        """
        if isinstance(payload, str | bytes):
            try:
                payload = json.loads(payload)
            except (ValueError, RecursionError):  # a forged reply may nest JSON 100,000 deep
                return cls()
        if not isinstance(payload, dict):
            return cls()
        content = payload.get("answer_content", "")
        dropped = payload.get("output_dropped", 0)
        return cls(
            answer_content=_text(content),
            answer_ready=payload.get("answer_ready") is True,
            context_restored=payload.get("context_restored") is True,
            output_dropped=dropped if isinstance(dropped, int) and dropped > 0 else 0,
        )


def _text(content: object) -> str:
    """The answer's content as text; None is no answer, not the text "None"."""
    if content is None:
        return ""
    return content if isinstance(content, str) else str(content)


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
    state: KernelState = field(default_factory=KernelState)

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
        return "\n".join(part.rstrip("\n") for part in parts if part)


def timeout_error(cell_timeout_s: float) -> CellError:
    """The error a cell interrupted after ``cell_timeout_s`` seconds reports (any backend)."""
    message = f"the cell ran longer than {cell_timeout_s:g} s and was interrupted"
    return CellError(
        ename="TimeoutError",
        evalue=message,
        traceback=f"TimeoutError: {message}; variables defined before the interruption are kept",
    )
