"""One way to own resources for the length of an ``async with`` block."""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self


class AsyncResource:
    """Base of the objects that open resources on entry and release them on exit.

    A subclass implements :meth:`_open`, registering everything it opens on ``stack``
    (``enter_async_context``, ``callback``, ``push_async_callback``). If ``_open`` raises (or
    is cancelled), what it registered so far is released at once; leaving the block releases
    everything in reverse order, also on cancellation or an error (which is never swallowed).
    Entering twice is an error.
    """

    _stack: AsyncExitStack | None = None

    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the resources, registering their release on ``stack``."""
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        """Whether the ``async with`` block is running."""
        return self._stack is not None

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError(f"this {type(self).__name__} is already open")
        stack = AsyncExitStack()
        try:
            await self._open(stack)
        except BaseException:
            # Released without the error: a task group on the stack must not wrap it.
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
