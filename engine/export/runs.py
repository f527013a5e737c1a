"""Rebuild each run of a trajectory: the conversation its root model had, turn by turn.

A ``turn`` event carries ``messages``: the messages sent to the model before that turn that it
had not seen yet (the system prompt and the query before the first turn; cell outputs and nudges
after), and ``reply``: what the model answered. Concatenated, they are the conversation exactly
as first sent (the loop may later elide old outputs to fit the window; an export keeps them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import RLMError


class ExportError(RLMError):
    """A trajectory, results file or service could not be turned into training data."""


@dataclass
class Turn:
    """One root turn: what it was sent, what it replied, and how its cells went."""

    iteration: int
    messages: list[dict[str, str]]
    reply: str
    errors: int = 0
    timeouts: int = 0
    nudges: list[str] = field(default_factory=list)
    answer_ready: bool = False


@dataclass
class SubCall:
    """One ``llm_query``/``rlm_query`` a cell made: a prompt and its response."""

    kind: str
    model: str | None
    prompt: str
    response: str
    status: str | None


@dataclass
class RootRun:
    """One run (top-level or child) of a trajectory, ready to export."""

    run_id: int
    task_id: str
    depth: int
    query: str
    model: str | None
    turns: list[Turn] = field(default_factory=list)
    sub_calls: list[SubCall] = field(default_factory=list)
    answer: str = ""
    ready: bool = False
    stop_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def conversation(self) -> list[dict[str, str]]:
        """The whole conversation: every turn's new messages, then its reply."""
        chat: list[dict[str, str]] = []
        for turn in self.turns:
            chat.extend(turn.messages)
            chat.append({"role": "assistant", "content": turn.reply})
        return chat


def runs_from_events(events: list[Any], *, source: str) -> list[RootRun]:
    """Every run in ``events`` (one trajectory), in start order.

    Raises :class:`ExportError` when a turn lacks its ``messages`` (a trajectory written before
    they were recorded) instead of exporting a conversation with holes, and when the events
    are not a trajectory's (a file handed to the user may hold any JSON: a list for an event,
    a list for an id, text for a number), instead of a traceback.
    """
    try:
        return _runs(events, source)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ExportError(
            f"{source} is not a trajectory this version can export ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None


def _runs(events: list[Any], source: str) -> list[RootRun]:
    parents = {e["id"]: e.get("parent_id") for e in events if e.get("id") is not None}
    starts = {e["id"] for e in events if e.get("type") == "run_start"}
    owners: dict[Any, int | None] = {}

    def run_of(event_id: Any) -> int | None:
        # Walk up to the nearest run_start: a sub-call's parent is a cell whose event is written
        # after the sub-call's, so ownership needs the whole file, not the order of lines.
        # Every id on the way is remembered: a file of n events each the child of the previous
        # one took n * n steps (hours for a million lines).
        path: list[Any] = []
        seen = 0
        while (
            event_id is not None
            and event_id not in starts
            and event_id not in owners
            and seen < len(parents)
        ):
            path.append(event_id)
            event_id = parents.get(event_id)
            seen += 1
        if event_id in owners:
            owner = owners[event_id]
        else:
            owner = int(event_id) if event_id in starts else None
        for step in path:
            owners[step] = owner
        return owner

    runs: dict[int, RootRun] = {}
    turns: dict[int, Turn] = {}  # turn event id -> turn
    for event in events:
        kind, event_id, parent = event.get("type"), event.get("id"), event.get("parent_id")
        if kind == "run_start":
            run = RootRun(
                run_id=int(event_id),
                task_id=str(event.get("task_id", "")),
                depth=int(event.get("depth", 1)),
                query=str(event.get("query", "")),
                model=event.get("model"),
            )
            runs[run.run_id] = run
            continue
        owner = run_of(parent)
        if owner is None or owner not in runs:
            continue
        run = runs[owner]
        if kind == "turn":
            if "messages" not in event:
                raise ExportError(
                    f"{source}: turn events carry no 'messages' (the trajectory predates them); "
                    "re-run the task with this version to export it"
                )
            turn = Turn(
                int(event.get("iteration", 0)), list(event["messages"]), str(event["reply"])
            )
            run.turns.append(turn)
            turns[int(event["id"])] = turn
        elif kind in ("cell", "nudge") and parent in turns:
            turn = turns[parent]
            if kind == "nudge":
                turn.nudges.append(str(event.get("reason")))
            else:
                turn.errors += event.get("error") is not None
                turn.timeouts += bool(event.get("timed_out"))
                turn.answer_ready = turn.answer_ready or bool(event.get("answer_ready"))
        elif kind == "sub_call":
            run.sub_calls.append(
                SubCall(
                    kind=str(event.get("kind", "llm_query")),
                    model=event.get("model"),
                    prompt=str(event.get("prompt", "")),
                    response=str(event.get("response") or ""),
                    status=event.get("status"),
                )
            )
        elif kind == "run_end":
            run.answer = str(event.get("answer") or "")
            run.ready = bool(event.get("ready"))
            run.stop_reason = event.get("stop_reason")
            run.usage = dict(event.get("usage") or {})
    return list(runs.values())
