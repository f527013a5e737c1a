"""Token and cost accounting: :class:`Usage` values and the shared :class:`UsageLedger`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

CALL_STATUSES = ("ok", "error", "cancelled")


@dataclass(frozen=True)
class Usage:
    """Tokens and cost (USD) of one or more model calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class _Key:
    model: str
    role: str
    status: str


class UsageLedger:
    """Accounting shared by a whole recursion tree (root, sub-calls, child RLMs).

    Every model call is recorded once with its status (``ok``, ``error`` or ``cancelled``), so
    failed and cancelled calls are counted too. Safe to use from several tasks and threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage: dict[_Key, Usage] = {}
        self._count: dict[_Key, int] = {}
        self._hits = 0
        self._saved = Usage()

    def record(self, *, model: str, role: str, usage: Usage, status: str) -> None:
        """Add one call's usage under ``model``/``role``/``status``."""
        if status not in CALL_STATUSES:
            raise ValueError(f"status must be one of {CALL_STATUSES}, got {status!r}")
        key = _Key(model, role, status)
        with self._lock:
            self._usage[key] = self._usage.get(key, Usage()) + usage
            self._count[key] = self._count.get(key, 0) + 1

    def record_hit(self, *, saved: Usage) -> None:
        """Count one call answered from the model-call cache; ``saved`` is what it would cost."""
        with self._lock:
            self._hits += 1
            self._saved = self._saved + saved

    @property
    def cache_hits(self) -> int:
        """Calls answered from the cache (they are not provider calls and cost nothing)."""
        with self._lock:
            return self._hits

    @property
    def cache_saved(self) -> Usage:
        """Tokens and cost the cache hits would have spent."""
        with self._lock:
            return self._saved

    def totals(self, role: str | None = None) -> Usage:
        """Summed usage of all calls (or of one ``role``), whatever their status."""
        with self._lock:
            items = [u for k, u in self._usage.items() if role is None or k.role == role]
        return sum(items, Usage())

    def calls(self, role: str | None = None, status: str | None = None) -> int:
        """Number of calls, optionally only of one ``role`` and/or ``status``."""
        with self._lock:
            return sum(
                n
                for k, n in self._count.items()
                if (role is None or k.role == role) and (status is None or k.status == status)
            )

    def by_model(self) -> dict[str, Usage]:
        """Summed usage per model string."""
        out: dict[str, Usage] = {}
        with self._lock:
            for k, u in self._usage.items():
                out[k.model] = out.get(k.model, Usage()) + u
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: totals, per role, per model and call counts per status."""
        with self._lock:
            roles = sorted({k.role for k in self._usage})
        return {
            "total": self.totals().to_dict(),
            "by_role": {r: self.totals(r).to_dict() for r in roles},
            "by_model": {m: u.to_dict() for m, u in sorted(self.by_model().items())},
            "calls": {s: self.calls(status=s) for s in CALL_STATUSES},
            "cache": {"hits": self.cache_hits, "saved": self.cache_saved.to_dict()},
        }
