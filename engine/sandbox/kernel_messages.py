"""Type-check every Jupyter message a kernel sends before the orchestrator reads it.

The kernel is tenant code: a cell can read the connection file's HMAC key and send any frame
on any socket (a ``stream`` whose ``text`` is a number, a ``parent_header`` that is a string,
a fake ``execute_reply`` whose ``user_expressions`` is a list, JSON nested a million deep).
jupyter_client only checks the signature, so everything past it is checked here, in one
place, and a malformed message becomes :class:`KernelProtocolError`, which stops the sandbox
with a reason instead of raising a ``TypeError`` deep in the orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.text import valid_json

#: Message types whose content the orchestrator reads; others are counted and dropped.
_READ_KINDS = frozenset({"stream", "execute_result", "display_data", "error", "status"})


class KernelProtocolError(Exception):
    """The kernel sent a message that breaks the Jupyter protocol; the text says which."""


@dataclass(frozen=True)
class KernelMessage:
    """One checked message: its parent's id, its type and its content (a dict)."""

    parent_id: str | None
    kind: str
    content: dict[str, Any]


def _refuse(what: str) -> KernelProtocolError:
    return KernelProtocolError(
        f"the sandbox sent a malformed kernel message ({what}), so it was stopped; "
        "do not write to the kernel's sockets from sandbox code"
    )


def check_message(msg: object) -> KernelMessage:
    """The parts of a deserialized message the orchestrator uses, each type-checked."""
    if not isinstance(msg, dict):
        raise _refuse("not an object")
    header, parent, content = msg.get("header"), msg.get("parent_header"), msg.get("content")
    if not isinstance(header, dict) or not isinstance(parent, dict):
        raise _refuse("header or parent_header is not an object")
    kind = header.get("msg_type")
    if not isinstance(kind, str):
        raise _refuse("msg_type is not a string")
    parent_id = parent.get("msg_id")
    if parent_id is not None and not isinstance(parent_id, str):
        raise _refuse("parent msg_id is not a string")
    if not isinstance(content, dict):
        raise _refuse(f"{kind} content is not an object")
    if kind in _READ_KINDS:
        _check_content(kind, content)
        # A forged message may escape lone surrogates, which no UTF-8 writer accepts.
        content = valid_json(content)
    return KernelMessage(parent_id, kind, content)


def _check_content(kind: str, content: dict[str, Any]) -> None:
    if kind == "stream":
        _strings(kind, content, "name", "text")
    elif kind in ("execute_result", "display_data"):
        data = content.get("data", {})
        if not isinstance(data, dict):
            raise _refuse(f"{kind} data is not an object")
        _strings(kind, data, "text/plain")
    elif kind == "error":
        _strings(kind, content, "ename", "evalue")
        traceback = content.get("traceback", [])
        if not isinstance(traceback, list) or not all(isinstance(t, str) for t in traceback):
            raise _refuse("error traceback is not a list of strings")
    elif kind == "status":
        _strings(kind, content, "execution_state")


def _strings(kind: str, content: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in content and not isinstance(content[key], str):
            raise _refuse(f"{kind} {key} is not a string")


def output_chars(message: KernelMessage) -> int:
    """Characters of output a checked message carries (what decoding it cost, roughly)."""
    content = message.content
    if message.kind == "stream":
        return len(content.get("text", ""))
    if message.kind in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data", {})
        if isinstance(data, dict):
            return sum(len(v) for v in data.values() if isinstance(v, str))
    if message.kind == "error":
        return sum(len(line) for line in content.get("traceback", []))
    return 0


def reply_expressions(reply: object) -> dict[str, Any]:
    """The ``user_expressions`` of an ``execute_reply``'s content; ``{}`` when malformed.

    A wrong shape here only loses the cell's state report (an unfinished answer), which is
    what a kernel whose runtime was broken by its own cell gets anyway.
    """
    if not isinstance(reply, dict):
        return {}
    expressions = reply.get("user_expressions", {})
    return valid_json(expressions) if isinstance(expressions, dict) else {}
