"""The sandbox side of the bridge: ``llm_query``, ``llm_batch`` and ``rlm_query``.

These functions run inside the sandbox kernel, which has no network. They post JSON over
HTTP/1.1 to the orchestrator's bridge server on a Unix socket in the run directory, with the
task's bearer token; the orchestrator makes the real model calls. Standard library only.

Environment: ``RLM_BRIDGE_SOCKET`` (socket path), ``RLM_BRIDGE_TOKEN`` (bearer token),
``RLM_BRIDGE_TIMEOUT`` (seconds to wait for one answer, default 3600: sub-calls and child
RLMs can take minutes). They are read at every call, so the module can be imported before
they are set.

A child context for ``rlm_query`` is streamed (chunked, never held whole a second time) to
``POST /v1/contexts``: the sandbox has no host-writable storage of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["BridgeCallError", "BudgetExhausted", "llm_batch", "llm_query", "rlm_query"]

DEFAULT_TIMEOUT_S = 3600.0
_UNAVAILABLE = "the bridge is not available in this sandbox"
_CHUNK_CHARS = 1 << 20


class BridgeCallError(RuntimeError):
    """A sub-call through the bridge failed; the message says why."""


class BudgetExhausted(RuntimeError):
    """A task budget is used up: make no more sub-calls and finish with what you have."""


def llm_query(prompt: str, model: str | None = None, tools: list[str] | None = None) -> str:
    """Ask a sub-LLM one question and return its answer.

    ``prompt`` is the full text the sub-model sees (it does not see ``context`` unless you
    put the relevant part in the prompt). ``model`` picks another configured model; None is
    the default sub-model. ``tools`` names host tools the sub-model may call before it
    answers. Raises ``BudgetExhausted`` when a task budget is used up.
    """
    _check_str("llm_query", "prompt", prompt)
    _check_model("llm_query", model)
    payload: dict[str, Any] = {"prompt": prompt, "model": model}
    _add_tools("llm_query", payload, tools)
    reply = _call("/v1/llm_query", payload)
    return _reply_text("llm_query", reply)


def llm_batch(
    prompts: list[str], model: str | None = None, tools: list[str] | None = None
) -> list[str]:
    """Ask a sub-LLM many independent questions at once; answers come back in order.

    The prompts run concurrently, much faster than a loop of ``llm_query``. A prompt whose
    call fails gets the answer ``"[ERROR] <message>"`` instead of failing the whole batch.
    ``tools`` names host tools each sub-model may call before it answers.
    """
    if isinstance(prompts, str) or not isinstance(prompts, list | tuple):
        raise TypeError(
            f"llm_batch takes a list of prompt strings, not {type(prompts).__name__}; "
            "for a single prompt use llm_query"
        )
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"llm_batch: prompts[{index}] must be a str, not {type(prompt).__name__}"
            )
    _check_model("llm_batch", model)
    if not prompts:
        return []
    payload: dict[str, Any] = {"prompts": list(prompts), "model": model}
    _add_tools("llm_batch", payload, tools)
    reply = _call("/v1/llm_batch", payload)
    responses = reply.get("responses")
    if (
        not isinstance(responses, list)
        or len(responses) != len(prompts)
        or not all(isinstance(item, str) for item in responses)
    ):
        raise BridgeCallError("llm_batch: the bridge sent a malformed reply (no list of answers)")
    return responses


def rlm_query(prompt: str, context: Any = None) -> str:
    """Hand a sub-task to a child RLM (its own sandbox and root loop) and return its answer.

    ``context`` becomes the child's ``context``: a str, or any JSON-serialisable value (dict,
    list, numbers, ...). Use it for sub-tasks too large or too complex for one ``llm_query``.
    """
    _check_str("rlm_query", "prompt", prompt)
    context_id = None if context is None else _upload_context(context)
    reply = _call("/v1/rlm_query", {"prompt": prompt, "context_id": context_id})
    return _reply_text("rlm_query", reply)


# --- child contexts ----------------------------------------------------------------------------


def _upload_context(context: Any) -> str:
    """Stream ``context`` to the bridge; returns the id ``/v1/rlm_query`` takes."""
    if isinstance(context, str):
        pieces: Iterable[str] = (
            context[start : start + _CHUNK_CHARS] for start in range(0, len(context), _CHUNK_CHARS)
        )
        content_type = "text/plain; charset=utf-8"
    else:
        pieces = json.JSONEncoder(ensure_ascii=False).iterencode(context)
        content_type = "application/json"
    try:
        reply = _call("/v1/contexts", None, stream=_encoded(pieces), content_type=content_type)
    except (TypeError, ValueError) as exc:
        # Raised by the encoder mid-stream: the connection was dropped, so the bridge
        # discarded what it had received.
        raise TypeError(
            "rlm_query: context must be a str or a JSON-serialisable value (dict, list, str, "
            f"int, float, bool, None); {type(context).__name__} is not: {exc}. "
            "Convert it first, e.g. to a list of dicts or a string."
        ) from None
    context_id = reply.get("context_id")
    if not isinstance(context_id, str):
        raise BridgeCallError("rlm_query: the bridge sent a malformed reply (no context_id)")
    return context_id


def _encoded(pieces: Iterable[str]) -> Iterator[bytes]:
    """UTF-8 chunks of about a megabyte (lone surrogates become U+FFFD, as before)."""
    batch: list[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= _CHUNK_CHARS:
            yield "".join(batch).encode("utf-8", "replace")
            batch, size = [], 0
    if batch:
        yield "".join(batch).encode("utf-8", "replace")


# --- HTTP over the Unix socket -----------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket; reconnects by itself after the server closes."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


# One keep-alive connection per thread (code may call the helpers from a thread pool).
_local = threading.local()


def _settings() -> tuple[str, str, float]:
    path = os.environ.get("RLM_BRIDGE_SOCKET", "")
    token = os.environ.get("RLM_BRIDGE_TOKEN", "")
    if not path or not token:
        raise BridgeCallError(f"{_UNAVAILABLE}: RLM_BRIDGE_SOCKET and RLM_BRIDGE_TOKEN are not set")
    raw = os.environ.get("RLM_BRIDGE_TIMEOUT", "")
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise BridgeCallError(
            f"RLM_BRIDGE_TIMEOUT must be a number of seconds, not {raw!r}"
        ) from None
    if timeout <= 0:
        raise BridgeCallError(f"RLM_BRIDGE_TIMEOUT must be positive, not {raw!r}")
    return path, token, timeout


def _connection(path: str, timeout: float) -> _UnixHTTPConnection:
    key = (os.getpid(), path, timeout)
    conn: _UnixHTTPConnection | None = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "key", None) != key:
        if conn is not None and _local.key[0] == os.getpid():
            conn.close()  # a different socket or timeout; after a fork, leave the parent's alone
        conn = _UnixHTTPConnection(path, timeout)
        _local.conn, _local.key = conn, key
    elif conn.sock is not None and _peer_closed(conn.sock):
        conn.close()  # the next request reconnects
    return conn


def _peer_closed(sock: socket.socket) -> bool:
    # An idle keep-alive socket that is readable has hit EOF (or holds junk): don't reuse it.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _call(
    route: str,
    payload: dict[str, Any] | None,
    *,
    stream: Iterator[bytes] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """POST ``payload`` as JSON (or the chunks of ``stream``, chunked) and decode the reply."""
    path, token, timeout = _settings()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    body: bytes | Iterator[bytes]
    if stream is not None:
        body = stream  # http.client sends it with Transfer-Encoding: chunked
    else:
        try:
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let JSON escape them
            body = json.dumps(payload).encode("ascii")
        headers["Content-Length"] = str(len(body))
    conn = _connection(path, timeout)
    try:
        # If the server refuses early (e.g. body too large) sending breaks off, but its
        # answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(
                "POST", route, body=body, headers=headers, encode_chunked=stream is not None
            )
        response = conn.getresponse()
        data = response.read()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        conn.close()
        raise BridgeCallError(f"{_UNAVAILABLE} (no server at {path}: {exc.strerror})") from None
    except TimeoutError:
        conn.close()
        raise BridgeCallError(
            f"the bridge did not answer {route} within {timeout:g} s (RLM_BRIDGE_TIMEOUT)"
        ) from None
    except (http.client.HTTPException, OSError) as exc:
        conn.close()
        raise BridgeCallError(
            f"the connection to the bridge failed during {route} ({type(exc).__name__}: {exc}); "
            "the task may be ending"
        ) from None
    except BaseException:
        # E.g. KeyboardInterrupt from a cell timeout: closing makes the server cancel the call.
        conn.close()
        raise
    return _decode(route, response.status, data)


def _decode(route: str, status: int, data: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if status == 200 and isinstance(payload, dict):
        return payload
    error = payload.get("error") if isinstance(payload, dict) else None
    kind = message = None
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
    if not isinstance(message, str) or not message:
        message = data[:500].decode("utf-8", "replace").strip() or "no details"
    if status == 429:
        raise BudgetExhausted(message)
    name = route.rsplit("/", 1)[-1]
    exc = BridgeCallError(f"{name} failed (HTTP {status} {kind or 'error'}): {message}")
    # Kept for callers that re-raise in their own terms (host tools: rlm_runtime.tools).
    exc.kind, exc.detail = kind, message
    exc.exception = error.get("exception") if isinstance(error, dict) else None
    raise exc


def _reply_text(name: str, reply: dict[str, Any]) -> str:
    text = reply.get("response")
    if not isinstance(text, str):
        raise BridgeCallError(f"{name}: the bridge sent a malformed reply (no 'response' text)")
    return text


def _check_str(name: str, field: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name}: {field} must be a str, not {type(value).__name__}")


def _add_tools(name: str, payload: dict[str, Any], tools: object) -> None:
    if not tools:
        return
    if isinstance(tools, str) or not isinstance(tools, list | tuple):
        raise TypeError(f"{name}: tools must be a list of tool names, e.g. tools=['lookup']")
    if not all(isinstance(t, str) for t in tools):
        raise TypeError(f"{name}: tools must be a list of tool names, e.g. tools=['lookup']")
    payload["tools"] = list(tools)


def _check_model(name: str, model: object) -> None:
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise TypeError(f"{name}: model must be a non-empty str or None, not {model!r}")
