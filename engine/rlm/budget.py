"""Budgets shared by a whole recursion tree: wall time, tokens, cost and sub-calls.

The cost cap is enforced when each model call is sent (see :class:`UsageLedger`): a call
reserves its worst-case cost, so the spend of a tree never passes ``max_cost`` by more than
the error of that worst case (none for text prompts under byte-level tokenizers, see
:mod:`engine.models.pricing`), however many calls an ``llm_batch`` queues at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.config import Limits
from engine.errors import BudgetExceededError
from engine.models import UsageLedger

_HINT = "finish now: set answer['content'] to your best answer and answer['ready'] = True"


class Budget:
    """The limits of one top-level run, checked by the root loops and the bridge handlers.

    One instance is shared by the top-level run and all its children, so that tokens, cost,
    sub-calls and wall time add up over the whole tree. The iteration limit is per run and
    lives in the loop.
    """

    def __init__(
        self,
        limits: Limits,
        ledger: UsageLedger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.ledger = ledger
        # The cost cap holds at dispatch: the ledger admits each call against it.
        ledger.cap_cost(limits.max_cost_usd, self._refuse_cost)
        self._clock = clock
        self._started = clock()
        self.sub_calls = 0
        # Set when a sub-call was refused for lack of budget: the root loop then stops too.
        self.refused: str | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the budget was created (the start of the top-level run)."""
        return self._clock() - self._started

    def remaining_wall_s(self) -> float | None:
        """Seconds left before the wall-time limit, or None when there is no such limit."""
        if self.limits.max_wall_time_s is None:
            return None
        return max(self.limits.max_wall_time_s - self.elapsed_s, 0.0)

    def exceeded(self) -> str | None:
        """Return the stop reason of the first limit that is used up, or None."""
        limits = self.limits
        remaining = self.remaining_wall_s()
        if remaining is not None and remaining <= 0:
            return "max_wall_time"
        totals = self.ledger.totals()
        if limits.max_tokens is not None and totals.total_tokens >= limits.max_tokens:
            return "max_tokens"
        if limits.max_cost_usd is not None and totals.cost_usd >= limits.max_cost_usd:
            return "max_cost"
        return self.refused

    def check(self) -> None:
        """Raise :class:`BudgetExceededError` if a shared limit is used up."""
        reason = self.exceeded()
        if reason is not None:
            raise BudgetExceededError(reason, self.describe(reason))

    def reserve_sub_call(self) -> None:
        """Count one sub-call (``llm_query`` item or ``rlm_query``), or raise if none are left."""
        self.check()
        limit = self.limits.max_sub_calls
        if limit is not None and self.sub_calls >= limit:
            self.refused = "max_sub_calls"
            raise BudgetExceededError("max_sub_calls", self.describe("max_sub_calls"))
        self.sub_calls += 1

    def _refuse_cost(self, detail: str) -> BudgetExceededError:
        self.refused = "max_cost"
        return BudgetExceededError("max_cost", f"{self.describe('max_cost')} ({detail})")

    def describe(self, reason: str) -> str:
        """A message for the model and the user saying which limit was hit."""
        limits = self.limits
        if reason == "max_wall_time":
            what = f"wall-time limit of {limits.max_wall_time_s:g} s reached"
        elif reason == "max_tokens":
            what = f"token budget of {limits.max_tokens} tokens used up"
        elif reason == "max_cost":
            what = f"cost budget of ${limits.max_cost_usd:g} used up"
        elif reason == "max_sub_calls":
            what = f"sub-call budget of {limits.max_sub_calls} calls used up"
        else:
            what = f"limit {reason} reached"
        return f"{what}; {_HINT}"
