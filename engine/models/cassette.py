"""Cassettes: JSONL files of scripted or recorded model responses, and the recorder.

One entry per line::

    {"match": {"model": "root", "contains": "...", "request_hash": "..."},
     "response": {"content": "...", "finish_reason": "stop",
                  "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
     "status": 200, "headers": {}, "repeat": false, "delay_s": 0, "trickle_s": 0}

All ``match`` keys are optional; a request is answered by the first unused entry (file order)
whose keys all fit, and ``repeat: true`` entries can be used again. ``status``/``headers``
script errors (429 with ``Retry-After``...); ``delay_s`` holds the response back, e.g. to
observe concurrency; ``trickle_s`` plays a provider that never finishes: its response is one
space every ``trickle_s`` seconds, for ever (each read arrives well within any read timeout).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.user_files import parse_jsonl, read_jsonl

_ENTRY_KEYS = frozenset(
    {"match", "response", "status", "headers", "repeat", "delay_s", "trickle_s", "request"}
)
_MATCH_KEYS = frozenset({"model", "contains", "request_hash"})
_FORMAT_HINT = (
    'expected one JSON object per line like {"match": {"model": "root", "contains": "..."}, '
    '"response": {"content": "..."}}'
)


def request_hash(model: str, messages: Sequence[Mapping[str, Any]], stop: Any = None) -> str:
    """sha256 of the canonical JSON of a request's model, messages (role, content) and stop.

    ``model`` is the name the server receives (no provider prefix); a single stop string and
    a one-item list hash the same, as do ``None`` and ``[]``.
    """
    if isinstance(stop, str):
        stop = [stop]
    canonical = {
        "model": model,
        "messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
        "stop": list(stop or []),
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message ('' if none); list contents keep their text parts."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
            return ""
    return ""


@dataclass(frozen=True)
class CassetteEntry:
    """One scripted response and the conditions under which it answers."""

    content: str = ""
    finish_reason: str | None = "stop"
    usage: Mapping[str, int] | None = None
    model: str | None = None
    contains: str | None = None
    request_hash: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    repeat: bool = False
    delay_s: float = 0.0
    trickle_s: float = 0.0
    error: Mapping[str, Any] | None = None
    #: function calls to answer with: ``[{"id", "name", "arguments"}]`` (arguments: JSON text).
    tool_calls: tuple[Mapping[str, str], ...] = ()
    source: str = "<entry>"

    def matches(self, model: str, messages: Sequence[Mapping[str, Any]], stop: Any) -> bool:
        """Whether every ``match`` key of this entry fits the request."""
        if self.model is not None and self.model != model:
            return False
        if self.contains is not None and self.contains not in last_user_text(messages):
            return False
        return self.request_hash is None or self.request_hash == request_hash(model, messages, stop)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<entry>") -> CassetteEntry:
        """Validate one parsed JSON entry; raise ``ConfigError`` naming ``source`` if invalid."""

        def bad(why: str) -> ConfigError:
            return ConfigError(f"{source}: invalid cassette entry: {why}; {_FORMAT_HINT}")

        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - _ENTRY_KEYS
        if unknown:
            raise bad(f"unknown keys {sorted(unknown)} (allowed: {sorted(_ENTRY_KEYS)})")
        match = data.get("match") or {}
        if not isinstance(match, dict):
            raise bad('"match" must be an object')
        unknown = set(match) - _MATCH_KEYS
        if unknown:
            raise bad(f"unknown match keys {sorted(unknown)} (allowed: {sorted(_MATCH_KEYS)})")
        for key in _MATCH_KEYS & set(match):
            if not isinstance(match[key], str):
                raise bad(f'"match.{key}" must be a string')
        status = data.get("status", 200)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise bad(f'"status" must be an HTTP status code, got {status!r}')
        response = data.get("response", {} if status != 200 else None)
        if not isinstance(response, dict):
            raise bad('"response" must be an object (with "content" for status 200)')
        content = response.get("content", "" if status != 200 else None)
        if not isinstance(content, str):
            raise bad('"response.content" must be a string')
        usage = response.get("usage")
        if usage is not None and not (
            isinstance(usage, dict)
            and all(
                isinstance(usage.get(k, 0), int) for k in ("prompt_tokens", "completion_tokens")
            )
        ):
            raise bad('"response.usage" must be {"prompt_tokens": int, "completion_tokens": int}')
        headers = data.get("headers") or {}
        if not isinstance(headers, dict):
            raise bad('"headers" must be an object of strings')
        delay = data.get("delay_s", 0.0)
        # not (x >= 0): also refuses NaN (Python's decoder reads it), which every check passes.
        if not isinstance(delay, int | float) or not 0 <= delay < math.inf:
            raise bad('"delay_s" must be a finite number >= 0')
        trickle = data.get("trickle_s", 0.0)
        if not isinstance(trickle, int | float) or not 0 <= trickle < math.inf:
            raise bad('"trickle_s" must be a finite number >= 0')
        error = response.get("error")
        if error is not None and not isinstance(error, dict):
            raise bad('"response.error" must be an object like {"message": "..."}')
        tool_calls = response.get("tool_calls") or []
        if not isinstance(tool_calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in tool_calls
        ):
            raise bad('"response.tool_calls" must be a list of {"name", "arguments", "id"}')
        return cls(
            tool_calls=tuple(_tool_call(c, i) for i, c in enumerate(tool_calls)),
            content=content,
            finish_reason=response.get("finish_reason", "stop"),
            usage=dict(usage) if usage else None,
            model=match.get("model"),
            contains=match.get("contains"),
            request_hash=match.get("request_hash"),
            status=status,
            headers={str(k): str(v) for k, v in headers.items()},
            repeat=bool(data.get("repeat", False)),
            delay_s=float(delay),
            trickle_s=float(trickle),
            error=error,
            source=source,
        )


def _tool_call(call: Mapping[str, Any], index: int) -> dict[str, str]:
    arguments = call.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": str(call.get("id") or f"call_{index}"),
        "name": call["name"],
        "arguments": arguments,
    }


class Cassette:
    """An ordered list of :class:`CassetteEntry`, loaded from JSONL or built in code."""

    def __init__(self, entries: Iterable[CassetteEntry | Mapping[str, Any]] = ()) -> None:
        self.entries: list[CassetteEntry] = [
            e if isinstance(e, CassetteEntry) else CassetteEntry.from_dict(e, f"<entry {i}>")
            for i, e in enumerate(entries, 1)
        ]

    @classmethod
    def load(cls, path: Path | str) -> Cassette:
        """Read a JSONL cassette; a line that does not parse raises ``ConfigError`` (file:line).

        The file may have been handed to the user: it is read bounded (a regular file, at
        most 1 GiB), and what it cannot hold is an error, never a traceback.
        """
        path = Path(path)
        return cls._from_lines(read_jsonl(path, "replay cassette"), str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<cassette>") -> Cassette:
        """Parse JSONL text; blank lines are skipped."""
        return cls._from_lines(parse_jsonl(text.encode("utf-8", "surrogatepass"), source), source)

    @classmethod
    def _from_lines(cls, lines: list[tuple[int, Any]], source: str) -> Cassette:
        return cls(CassetteEntry.from_dict(data, f"{source}:{number}") for number, data in lines)

    def __len__(self) -> int:
        return len(self.entries)


class CassetteRecorder:
    """Appends one cassette entry per completed model call to a JSONL file.

    Entries carry the ``request_hash`` of (wire model, messages, stop), so replaying the file
    answers each request with its own recorded response even when calls run concurrently.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError as exc:
            raise ConfigError(
                f"cannot write the record cassette {self.path}: {exc.strerror or exc}; "
                "choose a writable path"
            ) from exc

    def record(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stop: Sequence[str] | None,
        content: str,
        finish_reason: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        tool_calls: list[dict[str, str]] | None = None,
    ) -> None:
        """Append one entry; ``model`` is the wire model name (no provider prefix)."""
        entry = {
            "match": {"model": model, "request_hash": request_hash(model, messages, stop)},
            "request": {
                "messages": [
                    {"role": m.get("role"), "content": m.get("content")} for m in messages
                ],
                "stop": list(stop or []),
            },
            "response": {
                "content": content,
                "finish_reason": finish_reason,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                **({"tool_calls": tool_calls} if tool_calls else {}),
            },
            "status": 200,
            "headers": {},
            "repeat": False,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        # One write per line under a lock: concurrent calls never interleave within a line.
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            raise ConfigError(
                f"cannot append to the record cassette {self.path}: {exc.strerror or exc}; "
                "free disk space or choose another path"
            ) from exc
