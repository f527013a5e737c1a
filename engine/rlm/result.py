"""The outcome of one RLM run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.models import Usage

# Why a run stopped; "answer" = answer["ready"] set in the kernel, "final" = FINAL in prose.
STOP_REASONS: tuple[str, ...] = (
    "answer",
    "final",
    "max_iterations",
    "max_wall_time",
    "max_tokens",
    "max_cost",
    "max_sub_calls",
    "error",
    "cancelled",
)


@dataclass(frozen=True)
class RunResult:
    """What :meth:`engine.Engine.run` returns.

    ``ready`` is True only when the model declared its answer final; at a limit ``answer`` is
    the best answer so far (the kernel's ``answer["content"]`` or the last prose reply) and
    ``stop_reason`` names the limit.
    """

    answer: str
    ready: bool
    stop_reason: str
    iterations: int
    sub_calls: int
    usage_root: Usage
    usage_sub: Usage
    usage_total: Usage
    wall_s: float
    trajectory_path: Path | None
    task_id: str
    error: str | None = None
    #: Model calls answered from the model-call cache: ``{"hits": n, "saved": usage}``.
    cache: dict[str, Any] | None = None
    #: With an output schema: the validated answer as a value (``answer`` is its JSON text).
    answer_json: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (usage as dicts with ``total_tokens``)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = value
        for key in ("usage_root", "usage_sub", "usage_total"):
            out[key] = usage_dict(getattr(self, key))
        out["trajectory_path"] = str(self.trajectory_path) if self.trajectory_path else None
        return out


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Return ``usage`` as a plain dict."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost_usd": round(usage.cost_usd, 6),
    }
