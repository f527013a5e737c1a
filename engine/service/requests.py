"""Validation of API request bodies into typed job requests, with clear 4xx messages."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.config import Limits
from engine.errors import RLMError, ServiceError
from engine.settings import Setting, api_settings, is_finite

MAX_QUERY_CHARS = 100_000
MAX_RETRIES = 5
#: An answer's JSON Schema, as JSON. A schema is a few KiB; without a cap one could take the
#: whole request body (64 MiB), stored with the job and sent with every read of it.
MAX_SCHEMA_BYTES = 64 << 10
#: Jobs or sessions per page of a listing (``?limit=``, also its default).
MAX_PAGE = 100
#: Uploaded files one job may name. Each is looked up in the store on the event loop when the
#: job is submitted and again when it runs; many files belong in one archive upload.
MAX_FILE_IDS = 1_000

#: The budgets a job may set in ``limits``, by API name (declared in engine.settings).
LIMIT_SETTINGS: dict[str, Setting] = {s.name: s for s in api_settings()}


class ApiError(ServiceError):
    """A request the API refuses; ``status`` is the HTTP status, ``kind`` the error type."""

    def __init__(self, status: int, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param

    def body(self) -> dict[str, Any]:
        """The OpenAI-style error body."""
        return {"error": {"type": self.kind, "message": str(self), "param": self.param}}


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(422, "invalid_request_error", message, param)


@dataclass(frozen=True)
class JobRequest:
    """A validated job: what to ask, about what, with which models and budgets.

    ``context`` is inline text or a JSON value; ``file_ids`` name uploaded files. ``limits``
    holds only the budgets the client set (API names, see :data:`LIMIT_SETTINGS`).
    """

    query: str
    context: Any = None
    file_ids: tuple[str, ...] = ()
    model: str | None = None
    sub_model: str | None = None
    limits: dict[str, float | int] = field(default_factory=dict)
    max_retries: int = 0
    #: the service's tools this job may use (None: all of them); a job can never add tools.
    tools: tuple[str, ...] | None = None
    #: a JSON Schema the final answer must match (checked when the request is parsed).
    output_schema: dict[str, Any] | None = None
    #: the session whose kernel runs this query (a session message), else None
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored with the job (inline context excluded: it is stored as a file)."""
        return {
            "query": self.query,
            "file_ids": list(self.file_ids),
            "model": self.model,
            "sub_model": self.sub_model,
            "limits": dict(self.limits),
            "max_retries": self.max_retries,
            "tools": None if self.tools is None else list(self.tools),
            "output_schema": self.output_schema,
            **({"session_id": self.session_id} if self.session_id else {}),
        }


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f'"{key}" must be a non-empty string', key)
    return value.strip()


def parse_limits(raw: Any, param: str = "limits") -> dict[str, float | int]:
    """Validate a ``limits`` object: known keys, positive numbers of the right type."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid(f'"{param}" must be an object like {{"max_iterations": 10}}', param)
    out: dict[str, float | int] = {}
    for key, value in raw.items():
        item = LIMIT_SETTINGS.get(key)
        if item is None:
            known = ", ".join(LIMIT_SETTINGS)
            raise invalid(f'unknown budget "{key}" in "{param}"; known: {known}', f"{param}.{key}")
        if value is None:
            continue
        kind = item.kind
        ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            what = "an integer" if kind is int else "a number"
            raise invalid(f'"{param}.{key}" must be {what} (got {value!r})', f"{param}.{key}")
        if not is_finite(value):
            # NaN would pass the minimum and the ceiling (every comparison with it is False):
            # a NaN max_cost was a run without a cost cap.
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}..."
            raise invalid(
                f'"{param}.{key}" must be a finite number (got {shown})', f"{param}.{key}"
            )
        try:
            item.check_minimum(value)
        except RLMError:
            raise invalid(
                f'"{param}.{key}" must be positive (got {value!r})', f"{param}.{key}"
            ) from None
        out[key] = kind(value)
    return out


def limits_with(base: Limits, limits: Mapping[str, float | int]) -> Limits:
    """``base`` with a job's budgets (API names) applied."""
    overrides: dict[str, Any] = {
        LIMIT_SETTINGS[name].field or name: value for name, value in limits.items()
    }
    return dataclasses.replace(base, **overrides) if overrides else base


def check_ceilings(
    limits: Mapping[str, float | int], ceilings: Mapping[str, float], param: str = "limits"
) -> None:
    """Refuse (422) a budget above the service's ceiling for it, naming the ceiling.

    The operator's limits are maxima: a job may lower them, never raise them.
    """
    for name, value in limits.items():
        ceiling = ceilings.get(name)
        # Written so that a value no comparison can order (NaN) is refused, not let through.
        if ceiling is not None and not value <= ceiling:
            flag = LIMIT_SETTINGS[name].flag_name
            raise invalid(
                f'"{param}.{name}" is {value:g}, above this service\'s ceiling of {ceiling:g} '
                f"(set by the operator with rlm serve {flag} or the config file); ask for "
                f"{ceiling:g} or less",
                f"{param}.{name}",
            )


def capped_limits(base: Limits, ceilings: Mapping[str, float]) -> Limits:
    """The limits a job gets when it sets none: ``base``, each budget at most its ceiling."""
    capped: dict[str, Any] = {}
    for name, ceiling in ceilings.items():
        field_name = LIMIT_SETTINGS[name].field or name
        current = getattr(base, field_name)
        if current is None or current > ceiling:
            capped[field_name] = LIMIT_SETTINGS[name].kind(ceiling)
    return dataclasses.replace(base, **capped) if capped else base


def parse_job_request(body: Any) -> JobRequest:
    """Validate the body of ``POST /v1/jobs``."""
    if not isinstance(body, dict):
        raise invalid('the request body must be a JSON object with at least "query"')
    known = {"query", "context", "file_id", "file_ids", "model", "sub_model", "limits"}
    known |= {"max_retries", "tools", "output_schema"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise invalid(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            unknown[0],
        )
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise invalid('"query" is required: the question the RLM should answer', "query")
    check_query_length(query)
    file_ids = _file_ids(body)
    context = body.get("context")
    if context is not None and file_ids:
        raise invalid('give either "context" (inline) or "file_id"/"file_ids", not both')
    retries = body.get("max_retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 5:
        raise invalid(f'"max_retries" must be an integer from 0 to {MAX_RETRIES}', "max_retries")
    return JobRequest(
        query=query,
        context=context,
        file_ids=file_ids,
        model=_optional_str(body, "model"),
        sub_model=_optional_str(body, "sub_model"),
        limits=parse_limits(body.get("limits")),
        max_retries=retries,
        tools=_tool_names(body),
        output_schema=parse_output_schema(body.get("output_schema"), "output_schema"),
    )


def check_query_length(query: str) -> None:
    """422 for a query over :data:`MAX_QUERY_CHARS` (every query a job stores: the jobs
    API's, a session message's, the chat API's)."""
    if len(query) > MAX_QUERY_CHARS:
        raise invalid(
            f'"query" is {len(query):,} characters; keep it under {MAX_QUERY_CHARS:,} and put '
            'long text in "context" or an uploaded file',
            "query",
        )


def parse_output_schema(raw: Any, param: str) -> dict[str, Any] | None:
    """Check a JSON Schema for the final answer; 422 naming what is wrong with it."""
    if raw is None:
        return None
    size = len(json.dumps(raw, ensure_ascii=False).encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise invalid(
            f'"{param}" is {size:,} bytes of JSON; keep the schema under {MAX_SCHEMA_BYTES:,}',
            param,
        )
    from engine.rlm.answer_schema import AnswerSchema

    try:
        return AnswerSchema(raw, source=f'"{param}"').schema
    except RLMError as exc:
        raise invalid(str(exc), param) from None


@dataclass(frozen=True)
class Page:
    """Which part of a listing to return: at most ``limit`` items after the id ``after``."""

    limit: int = MAX_PAGE
    after: str | None = None

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The listing's JSON from up to ``limit + 1`` items (the extra one says there are
        more); ``last_id`` is the cursor for the next page."""
        data = items[: self.limit]
        return {
            "object": "list",
            "data": data,
            "has_more": len(items) > self.limit,
            "last_id": data[-1]["id"] if data else None,
        }


def parse_page(params: Mapping[str, str]) -> Page:
    """``?limit=`` (1 to :data:`MAX_PAGE`) and ``?after=<id>`` of a listing.

    A listing was every job of the key in one response, built on the event loop that serves
    every key: 700 jobs with 100 KB queries made 99 MiB per request, and four at once grew
    the service by 660 MiB and stalled other keys for 9 s. Pages bound both.
    """
    text = params.get("limit")
    limit = MAX_PAGE
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
            raise invalid(f'"limit" must be an integer from 1 to {MAX_PAGE}', "limit")
        limit = int(text)
    after = params.get("after") or None
    return Page(limit, after)


def _tool_names(body: dict[str, Any]) -> tuple[str, ...] | None:
    names = body.get("tools")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise invalid(
            '"tools" must be a list of tool names (the service\'s tools to allow)', "tools"
        )
    return tuple(dict.fromkeys(names))


def _file_ids(body: dict[str, Any]) -> tuple[str, ...]:
    ids: list[str] = []
    single = body.get("file_id")
    if single is not None:
        if not isinstance(single, str) or not single:
            raise invalid('"file_id" must be a file id string from POST /v1/files', "file_id")
        ids.append(single)
    many = body.get("file_ids")
    if many is not None:
        if not isinstance(many, list) or not all(isinstance(i, str) and i for i in many):
            raise invalid('"file_ids" must be a list of file id strings', "file_ids")
        ids.extend(many)
    return tuple(dict.fromkeys(ids))
