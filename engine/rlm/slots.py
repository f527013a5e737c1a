"""The global sandbox limit: slots shared fairly between owners, children first.

A service runs at most ``total`` sandboxes at once, whoever starts them: a job's top-level
sandbox and every child sandbox of its ``rlm_query`` calls. Jobs wait for a slot in turns
between owners (round-robin over API keys, first come first served within one key), so one
key with many queued jobs cannot make another key's job wait behind all of them: a free slot
goes to the waiting key that holds the fewest slots, the longest-waiting key on a tie. Children
are served before any waiting job, since their parent already holds a slot. When every
slot is held by a parent that is itself waiting for a child, nobody could ever free one: the
newest child is refused at once (with an error its parent's code can handle, e.g. by calling
``llm_query`` instead) rather than deadlocking. A child also gives up after its wait bound.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from engine.errors import ChildRunError


class _Waiter:
    """One task waiting for a slot; ``granted`` is set when a slot was handed to it."""

    __slots__ = ("event", "granted", "owner")

    def __init__(self, owner: str | None = None) -> None:
        self.event = anyio.Event()
        self.granted = False
        self.owner = owner


class SandboxSlots:
    """At most ``total`` sandboxes at once; see the module docstring for the order of turns.

    Use from one event loop (the service's). ``child_wait_s`` bounds how long a child waits.
    """

    def __init__(self, total: int, *, child_wait_s: float = 60.0) -> None:
        if total < 1:
            raise ValueError(f"the sandbox limit must be at least 1, got {total}")
        self.total = total
        self.child_wait_s = child_wait_s
        self.in_use = 0
        self._children: deque[_Waiter] = deque()
        # owner -> its waiting jobs; the dict's order is the round-robin order of owners.
        self._jobs: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._held: dict[str, int] = {}  # owner -> slots its jobs hold

    @property
    def waiting(self) -> int:
        """Jobs and children waiting for a slot."""
        return len(self._children) + sum(len(q) for q in self._jobs.values())

    @asynccontextmanager
    async def job(self, owner: str) -> AsyncIterator[None]:
        """Hold a slot for a job of ``owner`` while the block runs (waits for its turn)."""
        waiter = _Waiter(owner)
        self._jobs.setdefault(owner, deque()).append(waiter)
        await self._acquire(waiter, lambda: self._forget_job(owner, waiter))
        try:
            yield
        finally:
            self._release(owner)

    @asynccontextmanager
    async def child(self, wait_s: float | None = None) -> AsyncIterator[None]:
        """Hold a slot for a child sandbox; raise :class:`ChildRunError` when none frees up
        within ``wait_s`` (default ``child_wait_s``)."""
        bound = self.child_wait_s if wait_s is None else min(wait_s, self.child_wait_s)
        waiter = _Waiter()
        self._children.append(waiter)
        self._dispatch()
        if not waiter.granted and len(self._children) >= self.in_use:
            # Every slot holder waits for a child: none will ever free a slot.
            self._children.remove(waiter)
            raise ChildRunError(
                f"no sandbox is free for a child RLM: all {self.total} sandboxes of the "
                "service are held by runs waiting for children; use llm_query, or split the "
                "work so that fewer child RLMs run at once"
            )
        with anyio.move_on_after(bound):
            await self._acquire(waiter, lambda: self._children.remove(waiter))
        if not waiter.granted:
            raise ChildRunError(
                f"no sandbox is free for a child RLM (the service runs at most {self.total} "
                f"sandboxes at once and none freed up within {bound:g} s); use llm_query, or "
                "retry rlm_query later"
            )
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, waiter: _Waiter, forget: Callable[[], None]) -> None:
        self._dispatch()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release(waiter.owner)  # granted just as we were cancelled: pass it on
            else:
                forget()
            raise

    def _forget_job(self, owner: str, waiter: _Waiter) -> None:
        queue = self._jobs.get(owner)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._jobs[owner]

    def _release(self, owner: str | None = None) -> None:
        self.in_use -= 1
        if owner is not None:
            held = self._held.get(owner, 0) - 1
            if held > 0:
                self._held[owner] = held
            else:
                self._held.pop(owner, None)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiters: children first, then owners in turn."""
        while self.in_use < self.total:
            waiter = self._next()
            if waiter is None:
                return
            self.in_use += 1
            if waiter.owner is not None:
                self._held[waiter.owner] = self._held.get(waiter.owner, 0) + 1
            waiter.granted = True
            waiter.event.set()

    def _next(self) -> _Waiter | None:
        if self._children:
            return self._children.popleft()
        if not self._jobs:
            return None
        # The key holding the fewest slots; min() keeps the first (longest waiting) on a tie.
        owner = min(self._jobs, key=lambda name: self._held.get(name, 0))
        queue = self._jobs[owner]
        waiter = queue.popleft()
        # This owner had its turn: move it behind the others (or drop it when done).
        del self._jobs[owner]
        if queue:
            self._jobs[owner] = queue
        return waiter
