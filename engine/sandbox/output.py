"""Bounded collection of a cell's output on the orchestrator's side."""

from __future__ import annotations

import collections

from engine.truncate import marker


class HeadTailBuffer:
    """Keeps the first and last ``limit // 2`` characters of a stream, and counts the rest.

    Memory stays bounded whatever the sandbox sends, and what is kept is what a reader wants:
    the beginning (headers, first results) and the end (final results, the error).
    """

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_len = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        room = self._head_limit - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
            text = text[room:]
        if not text:
            return
        if len(text) >= self._tail_limit:
            self.dropped += self._tail_len + len(text) - self._tail_limit
            self._tail.clear()
            text = text[-self._tail_limit :]
            self._tail_len = 0
        self._tail.append(text)
        self._tail_len += len(text)
        while self._tail_len > self._tail_limit:
            first = self._tail.popleft()
            excess = self._tail_len - self._tail_limit
            if len(first) > excess:
                self._tail.appendleft(first[excess:])
                self._tail_len -= excess
                self.dropped += excess
            else:
                self._tail_len -= len(first)
                self.dropped += len(first)

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.dropped:
            return head + tail
        return f"{head}{marker(self.dropped)}{tail}"
