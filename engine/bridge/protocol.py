"""The bridge's wire protocol: routes, request validation and error bodies.

Validation is strict and explains itself: a bad request gets a
:class:`~engine.errors.BridgeRequestError` whose message names the offending field, so the
code in the sandbox (and the model that wrote it) can fix the call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import BridgeRequestError
from engine.text import json_has_lone_surrogate

LLM_QUERY = "/v1/llm_query"
LLM_BATCH = "/v1/llm_batch"
RLM_QUERY = "/v1/rlm_query"
TOOL = "/v1/tool"
CONTEXTS = "/v1/contexts"
#: Routes whose body is a JSON object, read into memory (bounded) and validated by ``validate``.
JSON_ROUTES: frozenset[str] = frozenset({LLM_QUERY, LLM_BATCH, RLM_QUERY, TOOL})
#: Routes whose body is streamed to disk as it arrives (a child context of any size).
STREAM_ROUTES: frozenset[str] = frozenset({CONTEXTS})
ROUTES: frozenset[str] = JSON_ROUTES | STREAM_ROUTES

#: ``Content-Type`` of a child context upload -> the file suffix the child's loader reads.
CONTEXT_TYPES: dict[str, str] = {"text/plain": ".txt", "application/json": ".json"}

_CONTEXT_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True, slots=True)
class LlmQueryRequest:
    """``POST /v1/llm_query``."""

    prompt: str
    model: str | None
    #: names of host tools the sub-model may call (function calling); empty: none.
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmBatchRequest:
    """``POST /v1/llm_batch``."""

    prompts: list[str]
    model: str | None
    #: as in :class:`LlmQueryRequest`, for every prompt of the batch.
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RlmQueryRequest:
    """``POST /v1/rlm_query``; ``context_id`` names a context uploaded to ``/v1/contexts``."""

    prompt: str
    context_id: str | None


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """``POST /v1/tool``: call host tool ``name`` with ``args`` and ``kwargs``."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]


BridgeRequest = LlmQueryRequest | LlmBatchRequest | RlmQueryRequest | ToolRequest


def invalid(message: str) -> BridgeRequestError:
    """A 422 error for a body that does not match the protocol."""
    return BridgeRequestError(422, "invalid_request", message)


def parse_json(body: bytes | bytearray) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError: bad UTF-8 or JSON, and integers past Python's 4,300-digit limit;
        # RecursionError: arrays nested thousands deep (a 100 KB body). Both are the
        # sandbox's bad request (422), never the orchestrator's failure (500).
        raise invalid(f"the request body is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(value, dict):
        raise invalid(f"the request body must be a JSON object, not {_json_type(value)}")
    # JSON may escape a lone surrogate ("\\ud800"): valid JSON, but text no UTF-8 writer (the
    # trajectory, the model request) accepts; it was a 500 from deep in the orchestrator.
    if json_has_lone_surrogate(body, value):
        raise invalid("the request body holds a lone surrogate (\\ud800-\\udfff), not text")
    return value


def validate(path: str, payload: dict[str, Any], *, max_batch: int) -> BridgeRequest:
    """Check ``payload`` against the schema of route ``path`` and return the typed request."""
    if path == LLM_QUERY:
        _only(payload, {"prompt", "model", "tools"})
        return LlmQueryRequest(_prompt(payload, "prompt"), _model(payload), _tool_names(payload))
    if path == LLM_BATCH:
        _only(payload, {"prompts", "model", "tools"})
        return LlmBatchRequest(_prompts(payload, max_batch), _model(payload), _tool_names(payload))
    if path == RLM_QUERY:
        _only(payload, {"prompt", "context_id"})
        return RlmQueryRequest(_prompt(payload, "prompt"), _context_id(payload))
    if path == TOOL:
        return _tool_request(payload)
    raise BridgeRequestError(404, "not_found", f"no such bridge endpoint: {path}")


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The body of every error response: ``{"error": {"type", "message", ...}}``."""
    return {"error": {"type": kind, "message": message, **extra}}


def _only(payload: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise invalid(
            f"unknown field {unknown[0]!r}; allowed fields are {', '.join(sorted(allowed))}"
        )


def _prompt(payload: dict[str, Any], field: str) -> str:
    if field not in payload:
        raise invalid(f"missing field {field!r} (a string)")
    value = payload[field]
    if not isinstance(value, str):
        raise invalid(f"field {field!r} must be a string, not {_json_type(value)}")
    return value


def _model(payload: dict[str, Any]) -> str | None:
    value = payload.get("model")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"field 'model' must be a non-empty string or null, not {value!r}")
    return value


def _prompts(payload: dict[str, Any], max_batch: int) -> list[str]:
    if "prompts" not in payload:
        raise invalid("missing field 'prompts' (a list of strings)")
    value = payload["prompts"]
    if not isinstance(value, list):
        raise invalid(f"field 'prompts' must be a list of strings, not {_json_type(value)}")
    if len(value) > max_batch:
        raise invalid(
            f"field 'prompts' has {len(value)} items, more than the limit of {max_batch}; "
            "split the batch into smaller ones"
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(f"field 'prompts[{i}]' must be a string, not {_json_type(item)}")
    return value


def _context_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("context_id")
    if value is None:
        return None
    if not isinstance(value, str) or not _CONTEXT_ID.fullmatch(value):
        raise invalid(
            "field 'context_id' must be null or the id that POST /v1/contexts returned, "
            f"not {value!r}"
        )
    return value


def context_suffix(content_type: bytes) -> str:
    """The file suffix for a child-context upload, from its ``Content-Type`` header."""
    kind = content_type.split(b";", 1)[0].strip().lower().decode("ascii", "replace")
    try:
        return CONTEXT_TYPES[kind]
    except KeyError:
        raise BridgeRequestError(
            415,
            "unsupported_media_type",
            f"a child context must be sent as {' or '.join(CONTEXT_TYPES)}, not {kind!r}",
        ) from None


def _tool_names(payload: dict[str, Any]) -> tuple[str, ...]:
    value = payload.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise invalid("field 'tools' must be a list of tool names (strings) or null")
    return tuple(value)


def _tool_request(payload: dict[str, Any]) -> ToolRequest:
    _only(payload, {"name", "args", "kwargs"})
    name = _prompt(payload, "name")
    args = payload.get("args") or []
    kwargs = payload.get("kwargs") or {}
    if not isinstance(args, list):
        raise invalid(f"field 'args' must be a list, not {_json_type(args)}")
    if not isinstance(kwargs, dict):
        raise invalid(f"field 'kwargs' must be an object, not {_json_type(kwargs)}")
    return ToolRequest(name, args, kwargs)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
