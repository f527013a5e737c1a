"""The OpenAI-compatible face of the service: an RLM that looks like a plain chat model.

``POST /v1/chat/completions`` with ``model: "rlm"`` (the service's root model) or
``"rlm/<root model>"`` turns the conversation into a job: the root's task is the last user
message and the conversation is the context (a list of ``{"role", "content"}`` messages in
the kernel), unless it is a single short message. Files uploaded with ``POST /v1/files`` are
attached as content parts ``{"type": "file", "file": {"file_id": "file-..."}}`` (or the
extension field ``rlm.file_ids``); they become the context.

Extension field ``rlm`` in the request: ``{"limits": {...}, "sub_model": "...",
"file_ids": [...]}``. The response carries ``rlm`` too (job id, stop reason, iterations,
sub-calls, cost). While streaming, progress travels as SSE comment lines
(``: rlm {"type": "turn", ...}``), which OpenAI clients ignore, so the answer text stays clean.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from engine.service.requests import (
    ApiError,
    JobRequest,
    invalid,
    parse_limits,
    parse_output_schema,
)
from engine.service.store import JobRecord

MODEL_ALIAS = "rlm"
QUERY_MAX_CHARS = 4_000
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_STREAM_PIECE_CHARS = 64


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: the job to run and how to answer."""

    job: JobRequest
    model: str
    stream: bool
    include_usage: bool
    #: the last user message as sent (a session's query: the session holds the history)
    last_user: str = ""


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat request and turn it into a job."""
    if not isinstance(body, dict):
        raise invalid('the request body must be a JSON object with "model" and "messages"')
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid('"model" is required: use "rlm" or "rlm/<root model>"', "model")
    root_model: str | None = None
    if model != MODEL_ALIAS:
        prefix = MODEL_ALIAS + "/"
        if not model.startswith(prefix) or len(model) == len(prefix):
            raise ApiError(
                404,
                "model_not_found",
                f'unknown model {model!r}; use "rlm" (the service\'s root model) or '
                '"rlm/<root model>", e.g. "rlm/openai/gpt-4o-mini" (GET /v1/models)',
                "model",
            )
        root_model = model[len(prefix) :]
    if body.get("n", 1) != 1:
        raise invalid('"n" must be 1: an RLM run produces one answer', "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid('"stream" must be true or false', "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise invalid('"stream_options" must be an object', "stream_options")
    extension = body.get("rlm") or {}
    if not isinstance(extension, dict):
        raise invalid('"rlm" must be an object like {"limits": {"max_iterations": 10}}', "rlm")
    messages, file_ids = _messages(body.get("messages"))
    extra_ids = extension.get("file_ids") or []
    if not isinstance(extra_ids, list) or not all(isinstance(i, str) for i in extra_ids):
        raise invalid('"rlm.file_ids" must be a list of file ids', "rlm.file_ids")
    file_ids = list(dict.fromkeys([*file_ids, *extra_ids]))
    sub_model = extension.get("sub_model")
    if sub_model is not None and (not isinstance(sub_model, str) or not sub_model):
        raise invalid('"rlm.sub_model" must be a model name', "rlm.sub_model")
    query, context = conversation_task(messages, has_files=bool(file_ids))
    job = JobRequest(
        query=query,
        context=context,
        file_ids=tuple(file_ids),
        model=root_model,
        sub_model=sub_model,
        limits=parse_limits(extension.get("limits"), "rlm.limits"),
        output_schema=response_schema(body.get("response_format")),
    )
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return ChatRequest(
        job, model, stream, bool(options.get("include_usage", False)), last_user=last_user
    )


def response_schema(raw: Any) -> dict[str, Any] | None:
    """The answer's JSON Schema from OpenAI's ``response_format`` (None: free text).

    ``{"type": "json_schema", "json_schema": {"schema": {...}}}`` gives that schema;
    ``{"type": "json_object"}`` any JSON object; ``{"type": "text"}`` no schema.
    """
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise invalid(
            '"response_format" must be {"type": "json_schema", "json_schema": {"schema": '
            '{...}}}, {"type": "json_object"} or {"type": "text"}',
            "response_format",
        )
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise invalid(
            '"response_format.json_schema" must be an object with "schema" (a JSON Schema)',
            "response_format.json_schema.schema",
        )
    return parse_output_schema(spec["schema"], "response_format.json_schema.schema")


def _messages(raw: Any) -> tuple[list[dict[str, str]], list[str]]:
    if not isinstance(raw, list) or not raw:
        raise invalid('"messages" must be a non-empty list of {"role", "content"}', "messages")
    messages: list[dict[str, str]] = []
    file_ids: list[str] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            roles = ", ".join(sorted(_ROLES))
            raise invalid(f"{where} needs a role ({roles}) and content", where)
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            parts: list[str] = []
            for part_index, part in enumerate(content):
                part_where = f"{where}.content[{part_index}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif kind == "file" and isinstance(part.get("file"), dict):
                    file_id = part["file"].get("file_id")
                    if not isinstance(file_id, str) or not file_id:
                        raise invalid(f'{part_where} needs "file": {{"file_id": ...}}', part_where)
                    file_ids.append(file_id)
                else:
                    raise invalid(
                        f'{part_where}: only "text" and "file" parts are supported', part_where
                    )
            content = "".join(parts)
        if not isinstance(content, str):
            raise invalid(f"{where}.content must be a string or a list of parts", where)
        messages.append({"role": message["role"], "content": content})
    if not any(m["role"] == "user" for m in messages):
        raise invalid('"messages" needs at least one user message to answer', "messages")
    return messages, file_ids


def conversation_task(messages: list[dict[str, str]], *, has_files: bool) -> tuple[str, Any]:
    """Return (query, inline context) for a conversation.

    A single short user message with no files is just the query (no context). Otherwise the
    conversation is the context and the query names the last user message (quoted when
    short, else pointed to in ``context``). With files, the files are the context and the
    conversation must be short enough to go into the query.
    """
    last_index = max(i for i, m in enumerate(messages) if m["role"] == "user")
    last = messages[last_index]["content"]
    short = len(last) <= QUERY_MAX_CHARS
    if has_files:
        transcript = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages[:last_index])
        if not short or len(transcript) > QUERY_MAX_CHARS:
            raise invalid(
                "with attached files the conversation must be short (the files are the "
                f"context); keep messages under {QUERY_MAX_CHARS:,} characters or put the long "
                "text in a file",
                "messages",
            )
        if not last.strip():
            raise invalid("the last user message is empty; say what to do with the files")
        query = last if not transcript else f"{last}\n\nEarlier conversation:\n{transcript}"
        return query, None
    if len(messages) == 1 and short:
        if not last.strip():
            raise invalid("the user message is empty", "messages")
        return last, None
    if short and last.strip():
        query = (
            "Answer the last user message of the conversation held in `context` (a list of "
            "{'role', 'content'} messages). The last user message is:\n" + last
        )
    else:
        query = (
            "Answer the last user message of the conversation held in `context` (a list of "
            f"{{'role', 'content'}} messages): it is context[{last_index}]['content'], too "
            "long to quote here. Read it and do what it asks."
        )
    return query, messages


# --- responses ----------------------------------------------------------------------------


def _usage(result: dict[str, Any]) -> dict[str, int]:
    total = result.get("usage_total") or {}
    prompt = int(total.get("prompt_tokens", 0))
    completion = int(total.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(result: dict[str, Any]) -> str:
    """``stop`` when the RLM declared its answer final, ``length`` when a limit cut it."""
    return "stop" if result.get("ready") else "length"


def rlm_extension(job: JobRecord) -> dict[str, Any]:
    result = job.result or {}
    total = result.get("usage_total") or {}
    return {
        "job_id": job.id,
        "stop_reason": result.get("stop_reason"),
        "ready": result.get("ready"),
        "iterations": result.get("iterations"),
        "sub_calls": result.get("sub_calls"),
        "cost_usd": total.get("cost_usd"),
        "wall_s": result.get("wall_s"),
        "trajectory": f"/v1/jobs/{job.id}/trajectory",
    }


def job_failure(job: JobRecord) -> ApiError | None:
    """The error to return for a job that did not produce an answer, else None."""
    if job.status == "failed":
        return ApiError(502, "rlm_error", f"the RLM run failed: {job.error}")
    if job.status == "cancelled":
        return ApiError(499, "cancelled", "the RLM run was cancelled")
    return None


def job_gone(job_id: str) -> ApiError:
    """The error for a job deleted while a client waited for it."""
    return ApiError(410, "gone", f"job {job_id} was deleted before it ended")


def completion_body(job: JobRecord, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a finished job."""
    result = job.result or {}
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int(job.created_at),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.get("answer", "")},
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": _usage(result),
        "rlm": rlm_extension(job),
    }


def sse_data(payload: dict[str, Any] | str) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n"


def sse_comment(text: str) -> str:
    """An SSE comment line: clients ignore it, proxies see traffic (keeps the line alive)."""
    return ": " + text.replace("\n", " ") + "\n\n"


def chunk(job_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    return sse_data(
        {
            "id": f"chatcmpl-{job_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
    )


def answer_chunks(job: JobRecord, model: str, include_usage: bool) -> list[str]:
    """The SSE lines that stream a finished job's answer, its finish reason and usage."""
    result = job.result or {}
    answer = str(result.get("answer", ""))
    lines = [
        chunk(job.id, model, {"content": answer[i : i + _STREAM_PIECE_CHARS]})
        for i in range(0, len(answer), _STREAM_PIECE_CHARS)
    ]
    final = json.loads(chunk(job.id, model, {}, finish_reason(result))[len("data: ") :])
    final["rlm"] = rlm_extension(job)
    lines.append(sse_data(final))
    if include_usage:
        usage_chunk = json.loads(chunk(job.id, model, {})[len("data: ") :])
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(result)
        lines.append(sse_data(usage_chunk))
    return lines


def progress_text(event: dict[str, Any]) -> str:
    """A compact progress record of a trajectory event for an SSE comment."""
    keep = ("type", "depth", "iteration", "index", "kind", "status", "duration_s", "stop_reason")
    summary = {k: event[k] for k in keep if event.get(k) is not None}
    usage = event.get("usage")
    if isinstance(usage, dict) and usage.get("total_tokens") is not None:
        summary["tokens"] = usage["total_tokens"]
    return "rlm " + json.dumps(summary, separators=(",", ":"))


def models_body(root_model: str, created: int, allowed: list[str] | None = None) -> dict[str, Any]:
    """``GET /v1/models``: the RLM alias and ``rlm/<name>`` for every model the service allows
    (its root model first)."""
    names = [root_model, *(n for n in allowed or [] if n != root_model)]
    ids = [MODEL_ALIAS, *(f"{MODEL_ALIAS}/{name}" for name in names)]
    return {
        "object": "list",
        "data": [
            {"id": ident, "object": "model", "created": created, "owned_by": "rlm-engine"}
            for ident in ids
        ],
    }
