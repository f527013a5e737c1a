"""Concurrency limits and retries for model calls."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import anyio

from engine.errors import RLMError
from engine.log import get_logger
from engine.models.errors import classify

log = get_logger(__name__)

T = TypeVar("T")


class RetriesExhaustedError(Exception):
    """Raised by :meth:`CallScheduler.run` when a retryable failure persists.

    ``last`` is the final attempt's exception and ``attempts`` how many were made; the model
    client turns it into a :class:`engine.errors.ModelError` with a user-facing message.
    """

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"{attempts} attempts failed; last error: {last}")
        self.last = last
        self.attempts = attempts


class CallScheduler:
    """Bounds in-flight model calls (globally and per model) and retries transient failures.

    A call first takes a slot of its model, then a global slot, so a busy model never holds
    global slots while it waits. Retryable failures (429, 5xx, 408, connection errors,
    timeouts) are retried up to ``max_retries`` times with exponential backoff and jitter;
    a ``Retry-After`` from the provider replaces the computed delay and also pauses every
    other call to that model until it passes. Slots are released while waiting. Other
    failures are raised at once, unchanged. Cancellation propagates at any point.
    """

    def __init__(
        self,
        max_in_flight: int = 16,
        per_model: Mapping[str, int] | None = None,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._global = anyio.CapacityLimiter(max_in_flight)
        self._per_model = dict(per_model or {})
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._not_before: dict[str, float] = {}

    @property
    def max_in_flight(self) -> int:
        return int(self._global.total_tokens)

    def _limiter(self, model: str, limit: int | None) -> anyio.CapacityLimiter | None:
        # The operator's per_model map wins over the limit a ModelSpec carries.
        wanted = self._per_model.get(model, limit)
        if wanted is None:
            return None
        limiter = self._limiters.get(model)
        if limiter is None:
            limiter = self._limiters[model] = anyio.CapacityLimiter(wanted)
        elif limiter.total_tokens != wanted:
            limiter.total_tokens = wanted
        return limiter

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based), honouring ``Retry-After``."""
        if retry_after_s is not None:
            # A little jitter so calls told the same Retry-After do not return in lockstep.
            return min(retry_after_s, self.backoff_max_s) * random.uniform(1.0, 1.1)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def run(
        self, model: str, fn: Callable[[], Awaitable[T]], *, limit: int | None = None
    ) -> T:
        """Run ``fn`` (one model call) within the limits, retrying transient failures.

        ``limit`` caps concurrent calls of ``model`` unless the ``per_model`` map sets it.
        Raises :class:`RetriesExhaustedError` when retries run out, or the original
        exception of a non-retryable failure.
        """
        attempt = 0
        while True:
            attempt += 1
            await self._wait_cool_down(model)
            try:
                return await self._once(model, fn, limit)
            except anyio.get_cancelled_exc_class():
                raise
            except RLMError:
                raise  # the engine's own refusal (e.g. a cost cap at dispatch), not the provider's
            except Exception as exc:
                failure = classify(exc)
                if not failure.retryable:
                    raise
                if attempt > self.max_retries:
                    raise RetriesExhaustedError(exc, attempt) from exc
                delay = self.backoff_s(attempt, failure.retry_after_s)
                if failure.retry_after_s is not None:
                    self._not_before[model] = max(
                        self._not_before.get(model, 0.0), anyio.current_time() + delay
                    )
                log.info(
                    "model call failed, retrying",
                    model=model,
                    attempt=attempt,
                    kind=failure.kind,
                    status=failure.status,
                    delay_s=round(delay, 3),
                )
                await anyio.sleep(delay)

    async def _once(self, model: str, fn: Callable[[], Awaitable[T]], limit: int | None) -> T:
        limiter = self._limiter(model, limit)
        # A fresh borrower per call: one task may legitimately run several calls (nested
        # helpers), and CapacityLimiter refuses a second token to the same borrower.
        borrower = object()
        if limiter is not None:
            await limiter.acquire_on_behalf_of(borrower)
        try:
            await self._global.acquire_on_behalf_of(borrower)
            try:
                return await fn()
            finally:
                self._global.release_on_behalf_of(borrower)
        finally:
            if limiter is not None:
                limiter.release_on_behalf_of(borrower)

    async def _wait_cool_down(self, model: str) -> None:
        while (wait := self._not_before.get(model, 0.0) - anyio.current_time()) > 0:
            await anyio.sleep(wait)
