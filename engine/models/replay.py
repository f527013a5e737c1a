"""An OpenAI-compatible HTTP server that answers from a :class:`Cassette`.

It is the one test double of the project: tests and ``rlm replay serve`` point litellm (or any
OpenAI client) at it. It implements ``POST /v1/chat/completions`` (plain and ``stream: true``
SSE) and ``GET /v1/models``, cuts scripted content at the first ``stop`` string like a real
server, and answers an unmatched request with HTTP 400 naming the request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.errors import ConfigError
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.models.cassette import Cassette, CassetteEntry, last_user_text
from engine.models.stops import cut_at_stop

log = get_logger(__name__)

MISMATCH_MARKER = "replay cassette has no entry for this request"
_STREAM_PIECE_CHARS = 16


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C stays with the host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _estimate_tokens(text: str) -> int:
    return len(text) // 4


class ReplayServer(AsyncResource):
    """Serve a cassette over HTTP on ``host`` (127.0.0.1, ephemeral port by default).

    Use as an async context manager; ``base_url`` (``http://127.0.0.1:PORT/v1``) is set once it
    is entered. ``requests`` lists every chat request body received; ``max_in_flight`` and
    ``max_in_flight_by_model`` record the most requests that were being handled at once,
    which tests use to check concurrency limits without timing.
    """

    def __init__(self, cassette: Cassette | Path | str, host: str = "127.0.0.1", port: int = 0):
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_in_flight_by_model: dict[str, int] = {}
        self._in_flight_by_model: Counter[str] = Counter()
        self._used: set[int] = set()
        self._counter = 0
        self._server: _QuietServer | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        sock = self._bind()
        config = uvicorn.Config(
            self._app(),
            lifespan="off",
            log_config=None,  # leave the host's logging configuration alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = _QuietServer(config)
        self._server = server
        stack.callback(sock.close)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(self._stop)
        tg.start_soon(server.serve, [sock])
        # If serve() fails, the task group cancels this wait and re-raises its error.
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.005)
        log.debug("replay server started", base_url=self.base_url, entries=len(self.cassette))

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot start the replay server on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; choose another --port (0 picks a free one)"
            ) from exc
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.base_url = f"http://{host}:{self.port}/v1"
        return sock

    # --- HTTP -----------------------------------------------------------------------------

    def _app(self) -> Starlette:
        routes = []
        for prefix in ("/v1", ""):
            routes.append(Route(f"{prefix}/chat/completions", self._chat, methods=["POST"]))
            routes.append(Route(f"{prefix}/models", self._models, methods=["GET"]))
        return Starlette(routes=routes)

    def _pick(self, model: str, messages: list[dict[str, Any]], stop: list[str]) -> CassetteEntry:
        for index, entry in enumerate(self.cassette.entries):
            if index in self._used and not entry.repeat:
                continue
            if entry.matches(model, messages, stop):
                if not entry.repeat:
                    self._used.add(index)
                return entry
        raise LookupError

    async def _chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(
                400, 'request needs "model" and a "messages" list', "invalid_request_error"
            )
        self.requests.append(body)
        model = str(body.get("model", ""))
        messages: list[dict[str, Any]] = body["messages"]
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        with self._track(model):
            try:
                entry = self._pick(model, messages, stop)
            except LookupError:
                start = last_user_text(messages) or (
                    str(messages[-1].get("content", "")) if messages else ""
                )
                refusal = (
                    f"{MISMATCH_MARKER} (model={model}, last message starts "
                    f"{start[:80]!r}); record a cassette for this run or add a matching entry"
                )
                log.warning("replay mismatch", model=model, start=start[:80])
                return _error(400, refusal, "replay_mismatch")
            if entry.delay_s and await _hold(request, entry.delay_s):
                return Response(status_code=499)  # the client gave up; nobody reads this
            if entry.trickle_s:
                return StreamingResponse(
                    _trickle(entry.trickle_s), media_type="application/json", headers=entry.headers
                )
            if entry.status != 200:
                err = dict(entry.error or {})
                err.setdefault("message", f"scripted HTTP {entry.status} from the replay cassette")
                err.setdefault("type", "replay_scripted_error")
                return JSONResponse({"error": err}, status_code=entry.status, headers=entry.headers)
            text, was_cut = cut_at_stop(entry.content, stop)
            finish = "stop" if was_cut else entry.finish_reason
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if entry.tool_calls:
                message["tool_calls"] = _tool_calls(entry)
                finish = "tool_calls"
            usage = self._usage(entry, messages, text)
            self._counter += 1
            ident = f"chatcmpl-replay-{self._counter}"
            if body.get("stream"):
                options = body.get("stream_options") or {}
                chunks = _sse_chunks(ident, model, message, finish, usage, options)
                return StreamingResponse(
                    chunks, media_type="text/event-stream", headers=entry.headers
                )
            return _json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                },
                entry.headers,
            )

    @staticmethod
    def _usage(entry: CassetteEntry, messages: list[dict[str, Any]], text: str) -> dict[str, int]:
        if entry.usage is not None:
            prompt = int(entry.usage.get("prompt_tokens", 0))
            completion = int(entry.usage.get("completion_tokens", 0))
        else:
            prompt = sum(_estimate_tokens(str(m.get("content") or "")) for m in messages)
            completion = _estimate_tokens(text)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _models(self, request: Request) -> Response:
        names = sorted({e.model for e in self.cassette.entries if e.model} or {"replay"})
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "replay"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    @contextlib.contextmanager
    def _track(self, model: str) -> Iterator[None]:
        self.in_flight += 1
        self._in_flight_by_model[model] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_in_flight_by_model[model] = max(
            self.max_in_flight_by_model.get(model, 0), self._in_flight_by_model[model]
        )
        try:
            yield
        finally:
            self.in_flight -= 1
            self._in_flight_by_model[model] -= 1


async def _hold(request: Request, seconds: float) -> bool:
    """Wait ``seconds``; return True early if the client disconnects (like a real server)."""
    with anyio.move_on_after(seconds):
        while not await request.is_disconnected():
            await anyio.sleep(0.05)
        return True
    return False


def _json_response(payload: dict[str, Any], headers: Mapping[str, str]) -> Response:
    # ASCII JSON, as providers send: any str replays, a lone surrogate as its \\u escape
    # (starlette's JSONResponse writes UTF-8, which has no form for one and fails).
    return Response(json.dumps(payload), media_type="application/json", headers=dict(headers))


async def _trickle(interval_s: float) -> AsyncIterator[bytes]:
    """Whitespace (valid before any JSON value) every ``interval_s`` seconds, for ever."""
    while True:
        yield b" "
        await anyio.sleep(interval_s)


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status_code=status,
    )


def _tool_calls(entry: CassetteEntry) -> list[dict[str, Any]]:
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
        for call in entry.tool_calls
    ]


async def _sse_chunks(
    ident: str,
    model: str,
    message: dict[str, Any],
    finish: str | None,
    usage: dict[str, int],
    options: Mapping[str, Any],
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        payload = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    text = message["content"]
    yield chunk({"role": "assistant", "content": ""})
    for i in range(0, len(text), _STREAM_PIECE_CHARS):
        yield chunk({"content": text[i : i + _STREAM_PIECE_CHARS]})
    for index, call in enumerate(message.get("tool_calls", [])):
        yield chunk({"tool_calls": [{"index": index, **call}]})
    yield chunk({}, finish)
    if options.get("include_usage"):
        payload = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(payload)}\n\n"
    yield "data: [DONE]\n\n"
