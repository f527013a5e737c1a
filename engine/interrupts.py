"""SIGTERM stops a command the way Ctrl-C does, so its clean-up runs.

SIGTERM's default ends Python at once, without the clean-up a cancelled run does: a ``kill``,
``docker stop`` or ``timeout`` would leave a task's sandbox container, or a model server a
benchmark started, running. :func:`stop_on_sigterm` re-raises it as SIGINT, which takes
Ctrl-C's path: asyncio's runner cancels the main task (sandboxes and servers close), or
``KeyboardInterrupt`` outside an event loop.

:func:`signals_wake_the_loop` makes sure that path is taken at once. The kernel may deliver a
signal sent to the process to any one of its threads (Linux picks another thread when the main
one is busy with a pending signal); Python only flags it there, and runs the handler when the
main thread next runs Python code. An event loop with nothing scheduled (the chat waiting at
its prompt while a thread reads the line) sleeps in ``select`` for good, so such a Ctrl-C would
not be acted on (``tests/test_interrupts.py`` sends one to a reading thread on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def signals_wake_the_loop() -> AsyncIterator[None]:
    """While inside, any signal wakes the running event loop, whichever thread it reached.

    Python writes the signal's number to the "wakeup fd" from its C-level handler in whatever
    thread took the signal; the loop watches the other end, so it returns from ``select`` and
    the main thread runs the Python handler (asyncio's runner cancels the main task on SIGINT).
    Off the main thread, where no wakeup fd can be set, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # The loop's own reader callback, not a task: a task group here would wrap whatever the
    # body raises in an exception group. The commands run anyio on its asyncio backend.
    loop = asyncio.get_running_loop()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    loop.add_reader(reader.fileno(), _drain, reader)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()


def _drain(reader: socket.socket) -> None:
    # Waking up is the whole job: the bytes (signal numbers) are read so as not to pile up.
    with contextlib.suppress(BlockingIOError):
        reader.recv(256)
