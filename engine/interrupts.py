"""SIGTERM stops a command the way Ctrl-C does, so its clean-up runs.

SIGTERM's default ends Python at once, without the clean-up a cancelled run does: a ``kill``,
``docker stop`` or ``timeout`` would leave a task's sandbox container, or a model server a
benchmark started, running. :func:`stop_on_sigterm` re-raises it as SIGINT, which takes
Ctrl-C's path: asyncio's runner cancels the main task (sandboxes and servers close), or
``KeyboardInterrupt`` outside an event loop.
"""

from __future__ import annotations

import signal
from types import FrameType


class _State:
    terminated = False


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    _State.terminated = True
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell that ignores SIGINT for background jobs must not make SIGTERM ignored too.
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def stop_on_sigterm() -> None:
    """From now on, SIGTERM interrupts the process as Ctrl-C does (call from the main thread)."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def terminated() -> bool:
    """Whether the interrupt being handled came from SIGTERM (exit status 143, not 130)."""
    return _State.terminated
