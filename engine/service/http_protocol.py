"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request head.

Stock uvicorn gives a connection no deadline until its first request head is complete, and
none for the head of a later request once its first bytes arrived (the keep-alive timeout
stops at the first byte): a client sending one header line every few seconds holds its
connection, a socket and a file descriptor forever, without a key. Measured: 200 such
connections stayed open for 80 s and more. Here a head must be complete within
:data:`HEAD_TIMEOUT_S` of the connection opening or of the previous response ending, else
the connection is closed; requests with a body, streams and waits are bounded elsewhere
(per-key open requests, upload and body limits).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a complete request head (as the bridge allows its sandbox).
HEAD_TIMEOUT_S = 10.0


class HeadDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request head is late."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's head has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        # IDLE: no complete request head since the deadline was set (a request being read
        # or answered has moved the client's state on).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
