"""How long a sandbox has waited on the orchestrator, which its cell timeout does not count.

A cell that calls ``llm_batch`` over a few hundred items waits minutes on a slow model; the
cell timeout is there to stop the sandbox's own runaway code, and the task's wall-time and
sub-call budgets already bound the waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class BusyClock:
    """Seconds during which at least one call was in progress; overlapping calls count once.

    Thread-safe: the in-process fake sandbox makes its calls from the cell's thread.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self._total = 0.0

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Count the time inside this block (once, however many blocks overlap)."""
        with self._lock:
            if self._active == 0:
                self._since = self._now()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._total += self._now() - self._since

    def seconds(self) -> float:
        """Busy seconds so far, including a call still in progress."""
        with self._lock:
            running = self._now() - self._since if self._active else 0.0
            return self._total + running
