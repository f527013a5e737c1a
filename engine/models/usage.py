"""Token and cost accounting: :class:`Usage` values and the shared :class:`UsageLedger`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

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

    With a cost cap (:meth:`cap_cost`), every model call is admitted at dispatch (when it is
    about to be sent, not when it was queued): its worst-case cost is reserved, and a call is
    only sent while what was spent plus every reservation in flight stays within the cap.
    :meth:`admit` waits while reservations of calls in flight hold the rest of the budget and
    refuses once even the spent cost leaves no room; :meth:`settle` frees a reservation after
    the call's real usage is recorded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage: dict[_Key, Usage] = {}
        self._count: dict[_Key, int] = {}
        self.cost_cap_usd: float | None = None
        self._refuse: Callable[[str], BaseException] | None = None
        self._reserved = 0.0
        self._in_flight = 0  # reservations held (the amount alone drifts with float rounding)
        self._settled: anyio.Event | None = None
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

    def cap_cost(self, cap_usd: float | None, refuse: Callable[[str], BaseException]) -> None:
        """Enforce ``cap_usd`` at dispatch; ``refuse(detail)`` builds the error of a refused
        call (and may note the refusal, e.g. to stop the run)."""
        self.cost_cap_usd = cap_usd
        self._refuse = refuse

    @property
    def reserved_usd(self) -> float:
        """Worst-case cost reserved by calls in flight."""
        with self._lock:
            return self._reserved

    async def admit(self, estimate_usd: float) -> None:
        """Reserve ``estimate_usd`` for a call about to be sent, waiting while calls in flight
        hold the rest of the cap; raise the cap's error when there is no room at all."""
        cap = self.cost_cap_usd
        if cap is None:
            return
        while True:
            spent = self.totals().cost_usd
            with self._lock:
                if spent + self._reserved + estimate_usd <= cap:
                    self._reserved += estimate_usd
                    self._in_flight += 1
                    return
                in_flight = self._in_flight > 0
            if not in_flight:
                detail = (
                    f"${spent:.6g} spent; the next call may cost up to ${estimate_usd:.6g}, "
                    f"past the cap of ${cap:g}"
                )
                assert self._refuse is not None
                raise self._refuse(detail)
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()

    def settle(self, estimate_usd: float) -> None:
        """Free a reservation (after the call's real usage was recorded)."""
        with self._lock:
            self._in_flight -= 1
            self._reserved = max(self._reserved - estimate_usd, 0.0) if self._in_flight else 0.0
        settled, self._settled = self._settled, None
        if settled is not None:
            settled.set()

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
