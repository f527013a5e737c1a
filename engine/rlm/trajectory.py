"""The JSONL event stream of a run (and of its children), written as it happens.

Every event is a dict with ``id``, ``parent_id``, ``type``, ``task_id``, ``depth`` and ``t``
(seconds since the top-level run started), plus type-specific fields:

- ``run_start``: query, model, sub_model, profile, profile_reason (why ``auto`` chose it),
  context (ContextInfo fields), limits
- ``turn``: iteration, messages (new since the previous turn), reply, finish_reason, usage,
  duration_s
- ``cell``: iteration, index, code, output (as the model saw it), duration_s, timed_out,
  error, answer_ready
- ``nudge``: iteration, reason (no_code, prose_answer, final_var_missing, repeated_code,
  repeated_reply, auto_step, context_literal, failed_search, repeated_error, partial_copy,
  output_cut, partial_view, unsupported_answer, partial_listing, unpaired_answer,
  empty_answer, answer_invalid, reasoning_cut), message
- ``sub_call``: kind (llm_query | rlm_query), model, prompt, response, usage, status,
  duration_s, error; a child run's ``run_start`` has the ``sub_call``'s id as ``parent_id``;
  with host tools also tools, tool_rounds, tool_calls
- ``tool_call``: name, arguments (JSON of args/kwargs), result_chars, status, duration_s,
  error; its parent is the cell, or the ``sub_call`` of a sub-model that called it
- ``run_end``: answer, ready, stop_reason, iterations, sub_calls, tool_calls, usage, wall_s,
  error

Events of a run have its ``run_start`` id as parent, except sub-calls, whose parent is the
``cell`` that made them (a cell's id is reserved before it runs, its event written after).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from engine.log import get_logger
from engine.text import valid_json
from engine.user_files import read_jsonl

log = get_logger(__name__)

EventCallback = Callable[[dict[str, Any]], None]


class Trajectory:
    """Writes events to a JSONL file (flushed per event) and forwards them to a callback.

    One instance serves a whole recursion tree. Use as a context manager so the file is
    closed; ``path=None`` keeps events in memory only (for the callback).
    """

    def __init__(self, path: Path | None, on_event: EventCallback | None = None) -> None:
        self.path = path
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        self._file: IO[str] | None = None

    def __enter__(self) -> Trajectory:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def reserve_id(self) -> int:
        """Reserve an event id before the event is written (cells, sub-calls)."""
        return next(self._ids)

    def emit(
        self,
        type_: str,
        *,
        task_id: str,
        depth: int,
        parent_id: int | None,
        event_id: int | None = None,
        **fields: Any,
    ) -> int:
        """Write one event and pass it to the callback; return its id."""
        event: dict[str, Any] = {
            "id": event_id if event_id is not None else self.reserve_id(),
            "parent_id": parent_id,
            "type": type_,
            "task_id": task_id,
            "depth": depth,
            "t": round(self.elapsed_s, 4),
            **fields,
        }
        if self._file is not None or self._on_event is not None:
            line = json.dumps(event, ensure_ascii=False, default=str)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates (from a model reply, a forged kernel message, a tool) made
                # the write raise and end the run with a traceback; every consumer gets
                # U+FFFD in their place instead.
                event = valid_json(event)
                line = json.dumps(event, ensure_ascii=False, default=str)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:  # a broken progress display must not end the run
                log.warning("on_event callback failed", error=repr(exc), event_type=type_)
        return int(event["id"])


def read_trajectory(path: Path) -> list[dict[str, Any]]:
    """Read a trajectory file back into a list of events (``ConfigError`` for a file that
    is not one, read bounded: see engine/user_files.py)."""
    return [event for _, event in read_jsonl(path, "trajectory")]
