"""The OpenAPI 3.1 document of the service (served at ``GET /openapi.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.service.requests import LIMIT_SETTINGS

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string", "description": "what went wrong and what to do"},
                "param": {"type": ["string", "null"]},
            },
            "required": ["type", "message"],
        }
    },
}


def limits_schema(ceilings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The ``limits`` object a job may send, from engine.settings; ``ceilings`` become each
    budget's ``maximum`` (the operator's limits: a job may lower them, never raise them)."""
    properties: dict[str, Any] = {}
    for name, item in LIMIT_SETTINGS.items():
        schema: dict[str, Any] = {
            "type": "integer" if item.kind is int else "number",
            "description": item.help,
        }
        schema["minimum" if item.minimum == 0 else "exclusiveMinimum"] = 0
        if ceilings and name in ceilings:
            schema["maximum"] = ceilings[name]
        properties[name] = schema
    return {
        "type": "object",
        "description": (
            "Budgets shared by the whole recursion tree (omitted = the service's default). "
            "A value above the service's ceiling (maximum) is refused with 422."
        ),
        "properties": properties,
        "additionalProperties": False,
    }


_JOB_REQUEST = {
    "type": "object",
    "required": ["query"],
    "additionalProperties": False,
    "properties": {
        "query": {"type": "string", "description": "the question the RLM answers"},
        "context": {"description": "inline context: a string (text) or any JSON value"},
        "file_id": {"type": "string", "description": "an uploaded file as the context"},
        "file_ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": (
                "several uploaded files: context = {file name: text} (an archive's files "
                "under its name without the extension)"
            ),
        },
        "model": {"type": "string", "description": "root model (default: the service's)"},
        "sub_model": {"type": "string", "description": "sub-call model (default: root model)"},
        "limits": {"$ref": "#/components/schemas/Limits"},
        "tools": {
            "type": "array",
            "items": {"type": "string"},
            "description": "only these of the service's tools (default: all); never adds any",
        },
        "output_schema": {
            "type": "object",
            "description": (
                "a JSON Schema the final answer must match: the root is told it, an answer "
                "that does not match goes back to the root with the validation errors, and "
                "result.answer_json holds the validated value (an invalid schema: 422)"
            ),
        },
        "max_retries": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": "re-run the job this many times if a service restart interrupts it",
        },
    },
}

_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "'rlm' or 'rlm/<root model>'"},
        "messages": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "response_format": {
            "type": "object",
            "description": (
                "{type: 'json_schema', json_schema: {schema: {...}}}: the answer is JSON "
                "matching the schema (checked, sent back to the root until it matches); "
                "{type: 'json_object'}: any JSON object; {type: 'text'}: free text"
            ),
            "properties": {
                "type": {"enum": ["text", "json_object", "json_schema"]},
                "json_schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "schema": {"type": "object"}},
                },
            },
        },
        "rlm": {"type": "object", "description": "{limits, sub_model, file_ids}"},
    },
}

_SESSION_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        key: value
        for key, value in _JOB_REQUEST["properties"].items()  # type: ignore[attr-defined]
        if key in ("context", "file_id", "file_ids", "model", "sub_model", "limits", "tools")
    },
}

_MESSAGE_REQUEST = {
    "type": "object",
    "required": ["query"],
    "additionalProperties": False,
    "properties": {
        "query": {"type": "string"},
        "wait": {"type": "boolean", "description": "wait for the answer (default true)"},
        "output_schema": {"type": "object", "description": "a JSON Schema for this answer"},
    },
}

_SESSION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "session"},
        "status": {"enum": ["open", "closed"]},
        "created_at": {"type": "number"},
        "last_active": {"type": "number"},
        "closed_at": {"type": ["number", "null"]},
        "closed_reason": {"type": ["string", "null"]},
        "turns": {"type": "array", "items": {"type": "object"}},
        "links": {"type": "object"},
    },
}

_JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "job"},
        "kind": {"enum": ["job", "chat", "session"]},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "created_at": {"type": "number"},
        "started_at": {"type": ["number", "null"]},
        "finished_at": {"type": ["number", "null"]},
        "attempts": {"type": "integer"},
        "error": {"type": ["string", "null"]},
        "answer": {"type": ["string", "null"]},
        "result": {
            "type": ["object", "null"],
            "description": "RunResult: answer, ready, stop_reason, iterations, sub_calls, "
            "usage_root, usage_sub, usage_total, wall_s, task_id, error, answer_json (the "
            "validated value when the job had an output_schema)",
        },
        "links": {"type": "object"},
    },
}


def _op(
    summary: str,
    *,
    ok: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    auth: bool = True,
    params: list[str] | None = None,
    errors: tuple[int, ...] = (),
    ok_status: str = "200",
    content_type: str = "application/json",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    op["responses"][ok_status] = {
        "description": "success",
        "content": {content_type: {"schema": ok or {"type": "object"}}},
    }
    for status in (401, *errors) if auth else errors:
        op["responses"][str(status)] = {
            "description": _STATUS_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in params
        ]
    return op


_STATUS_TEXT = {
    400: "malformed request (not JSON)",
    401: "missing or invalid API key",
    404: "unknown job, file or model",
    409: "the job already ended, or the file is in use",
    413: "body or upload too large, or the key's storage quota is used up",
    403: "metrics are closed (no RLM_METRICS_KEYS)",
    415: "unsupported upload encoding",
    422: "invalid field (the message names it)",
    429: "a per-key limit: active jobs, open sessions or requests held open",
    502: "the RLM run failed",
}


def openapi_document(ceilings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The OpenAPI document; static apart from the schemas derived from the code and the
    service's ceilings."""
    job_ref = {"$ref": "#/components/schemas/Job"}
    session_ref = {"$ref": "#/components/schemas/Session"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rlm-engine",
            "version": "0.1.0",
            "description": "Recursive Language Model jobs over HTTP, plus an OpenAI-compatible "
            "chat endpoint where an RLM looks like a chat model. Authenticate with "
            "'Authorization: Bearer <key>' (keys from RLM_API_KEYS).",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": _op(
                    "OpenAI-compatible chat: model 'rlm' or 'rlm/<root model>'; the conversation "
                    "is the context, the last user message the task. stream=true sends "
                    "progress as SSE comments (': rlm {...}') then the answer. Extension "
                    "request field 'rlm': {limits, sub_model, file_ids}; response field 'rlm': "
                    "{job_id, stop_reason, iterations, sub_calls, cost_usd, wall_s}. "
                    "response_format {type: json_schema, json_schema: {schema}} makes the "
                    "answer JSON that matches the schema.",
                    body=_CHAT_REQUEST,
                    errors=(400, 404, 422, 429, 502),
                )
            },
            "/v1/models": {"get": _op("List the RLM model names")},
            "/v1/files": {
                "post": {
                    **_op(
                        "Upload a context file as the raw body (?filename=NAME keeps its "
                        "extension: .json parsed, .jsonl a list, .pdf/.docx/.html converted "
                        "to text on the host, .zip/.tar[.gz|.bz2|.xz] unpacked into a folder "
                        "context, else text; 422 names a file that cannot be read)",
                        errors=(400, 413, 415, 422, 429),
                        ok_status="201",
                    ),
                    "parameters": [
                        {"name": "filename", "in": "query", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                }
            },
            "/v1/files/{file_id}": {
                "get": _op("File metadata", params=["file_id"], errors=(404,)),
                "delete": _op(
                    "Delete an upload (refused while a queued or running job reads it)",
                    params=["file_id"],
                    errors=(404, 409),
                ),
            },
            "/v1/jobs": {
                "post": _op(
                    "Submit a job",
                    ok=job_ref,
                    body={"$ref": "#/components/schemas/JobRequest"},
                    errors=(400, 404, 413, 422, 429),
                    ok_status="201",
                ),
                "get": _op(
                    "This key's jobs in submission order, 100 at most per page (?status= "
                    "filters; ?limit=1..100; ?after=<last_id> for the next page while "
                    "has_more)",
                    errors=(404, 422),
                ),
            },
            "/v1/jobs/{job_id}": {
                "get": _op("Job status and result", ok=job_ref, params=["job_id"], errors=(404,)),
                "delete": _op(
                    "Delete a job, its events and its files (a running job is cancelled first)",
                    params=["job_id"],
                    errors=(404, 409),
                ),
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": _op(
                    "Cancel a queued or running job",
                    ok=job_ref,
                    params=["job_id"],
                    errors=(404, 409),
                )
            },
            "/v1/jobs/{job_id}/events": {
                "get": _op(
                    "Server-Sent Events: one per trajectory event (id = sequence number, event "
                    "= type: run_start, sandbox_ready, turn, cell, sub_call, nudge, run_end), "
                    "then 'end' with the job. Resume with Last-Event-ID or ?after=N.",
                    params=["job_id"],
                    errors=(404, 429),
                    content_type="text/event-stream",
                )
            },
            "/v1/jobs/{job_id}/trajectory": {
                "get": _op(
                    "The trajectory as JSON lines",
                    params=["job_id"],
                    errors=(404,),
                    content_type="application/x-ndjson",
                )
            },
            "/v1/sessions": {
                "post": _op(
                    "Create a session: several queries on one live kernel. Body: a job's "
                    "fields without query (context or file_id/file_ids, model, sub_model, "
                    "limits, tools). At most --max-sessions-per-key open sessions per key "
                    "(429); closed after --session-idle seconds without a message.",
                    ok=session_ref,
                    body=_SESSION_REQUEST,
                    errors=(400, 404, 413, 422, 429),
                    ok_status="201",
                ),
                "get": _op(
                    "This key's sessions (?status=open|closed filters; pages as for jobs: "
                    "?limit=, ?after=, has_more)",
                    errors=(404, 422),
                ),
            },
            "/v1/sessions/{session_id}": {
                "get": _op(
                    "A session and its turns (job_id, query, answer, stop_reason, kernel_note)",
                    ok=session_ref,
                    params=["session_id"],
                    errors=(404,),
                ),
                "delete": _op(
                    "End a session: its kernel and sandbox are removed, its history stays",
                    ok=session_ref,
                    params=["session_id"],
                    errors=(404,),
                ),
            },
            "/v1/sessions/{session_id}/messages": {
                "post": _op(
                    "Ask a query on the session's kernel (variables of earlier queries are "
                    "still set). Returns the ended job (wait=true, the default) or the job at "
                    "once with 202 (wait=false; follow it with the jobs API). result.kernel_note "
                    "says when the query ran on a fresh kernel (after a restart). 409: the "
                    "session is closed, or (replicas) its kernel lives on another replica.",
                    ok=job_ref,
                    body=_MESSAGE_REQUEST,
                    params=["session_id"],
                    errors=(400, 404, 409, 422, 429),
                )
            },
            "/healthz": {"get": _op("Liveness and readiness (nothing about tenants)", auth=False)},
            "/metrics": {
                "get": _op(
                    "Prometheus metrics of every tenant: needs an operator key from "
                    "RLM_METRICS_KEYS, not an API key",
                    content_type="text/plain",
                    errors=(401, 403),
                )
            },
            "/viewer/index.html": {
                "get": _op(
                    "The trajectory viewer (#job=<id>, asks for the API key)",
                    auth=False,
                    content_type="text/html",
                )
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Limits": limits_schema(ceilings),
                "JobRequest": _JOB_REQUEST,
                "Job": _JOB,
                "Session": _SESSION,
            },
        },
    }
