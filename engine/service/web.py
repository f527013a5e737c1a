"""What every route module shares: the request context, auth, JSON bodies, the SSE follower.

Routes live in ``engine.service.routes`` (one module per resource); each takes an
:class:`Api` and returns its starlette routes. :func:`follow_job` is the one loop that
follows a job's trajectory for streaming responses (the jobs event stream and the
OpenAI-compatible chat stream both render what it yields).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from engine.json_size import TooManyValues, decoded_overhead
from engine.service.auth import ENV_KEYS, ApiKeys
from engine.service.jobs import JobService, validate_limits, validate_tools
from engine.service.requests import ApiError, JobRequest
from engine.service.store import JobRecord, StoreError
from engine.text import json_has_lone_surrogate

KEEPALIVE_S = 10.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON_BODY_SLACK = 1 << 20  # room for the rest of a request around an inline context
#: Bodies larger than this are decoded in a worker thread (64 MiB takes about a second).
_THREAD_JSON_BYTES = 256 << 10

Handler = Callable[[Request], Awaitable[Response]]
OwnedHandler = Callable[[Request, str], Awaitable[Response]]


def error_response(exc: ApiError) -> JSONResponse:
    """The JSON response of a refused request (401s carry ``WWW-Authenticate``)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def unauthenticated(variable: str = ENV_KEYS) -> ApiError:
    """The 401 for a request without a valid key from ``variable``."""
    return ApiError(
        401,
        "authentication_error",
        "missing or invalid API key; send 'Authorization: Bearer <key>' with a key from the "
        f"service's {variable}",
    )


class OpenRequests:
    """The long requests each key holds open: event streams, waits for an answer, uploads,
    JSON bodies being received.

    Each holds a connection, a task and (streams) a store query per job change for as long as
    the client keeps it open, and none of them is bounded by a job's limits: without a cap one
    key opening thousands of event streams used the service's file descriptors and, at every
    event of the followed job, made thousands of store queries on the event loop that serves
    every key. Past ``limit`` per key a new one is refused (429); other keys are unaffected.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open_for(self, owner: str) -> int:
        """How many long requests ``owner`` holds open now."""
        return self._open.get(owner, 0)

    def acquire(self, owner: str) -> Callable[[], None]:
        """Count one more for ``owner`` (429 past the limit); returns its release, which may
        be called more than once."""
        held = self._open.get(owner, 0)
        if held >= self.limit:
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"this API key already holds {held} requests open (event streams, waits for an "
                f"answer, uploads; limit {self.limit}, rlm serve --max-streams-per-key); close "
                "some, or poll GET /v1/jobs/ID instead of streaming",
            )
        self._open[owner] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._open.get(owner, 1) - 1
                if left > 0:
                    self._open[owner] = left
                else:
                    self._open.pop(owner, None)

        return release

    def room(self, owner: str) -> bool:
        """Whether ``owner`` may open one more now (for requests whose wait is optional)."""
        return self.open_for(owner) < self.limit

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        """Count a request for the block (a wait or an upload inside one handler)."""
        release = self.acquire(owner)
        try:
            yield
        finally:
            release()


class HeldStream(StreamingResponse):
    """A streaming response that releases its key's :class:`OpenRequests` count when it ends,
    however it ends (finished, client gone, cancelled at shutdown), also when the body is
    never iterated (a generator's own ``finally`` would not run then)."""

    def __init__(
        self, content: AsyncIterator[str], release: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@dataclass(frozen=True)
class Api:
    """The service a route module serves, with its keys and start time."""

    service: JobService
    keys: ApiKeys
    started: int
    metrics_keys: ApiKeys | None = None
    #: the long requests each key holds open (see :class:`OpenRequests`)
    open_requests: OpenRequests = field(default_factory=lambda: OpenRequests(32))

    def stream(self, owner: str, content: AsyncIterator[str]) -> HeldStream:
        """An event stream for ``owner``, counted while open (429 past the key's limit)."""
        release = self.open_requests.acquire(owner)
        return HeldStream(content, release)

    def authed(self, handler: OwnedHandler) -> Handler:
        """Wrap a handler that needs an API key; it receives the key's owner id.

        Every :class:`ApiError` the handler raises becomes its JSON error response.
        """

        async def wrapper(request: Request) -> Response:
            owner = self.keys.authenticate(request.headers.get("authorization"))
            if owner is None:
                return error_response(unauthenticated())
            try:
                return await handler(request, owner)
            except ApiError as exc:
                return error_response(exc)
            except StoreError as exc:
                return error_response(ApiError(503, "service_unavailable", f"{exc}; retry later"))

        return wrapper

    def own_job(self, job_id: str, owner: str) -> JobRecord:
        """The job if ``owner`` owns it; 404 otherwise (other keys' jobs do not exist)."""
        job = self.service.store.get_job(job_id)
        if job is None or job.owner != owner:
            raise ApiError(404, "not_found", f"no job {job_id!r}; check the id (POST /v1/jobs)")
        return job

    def submit(self, owner: str, job: JobRequest, kind: str) -> JobRecord:
        """Validate the job's budgets against the service's and queue it."""
        validate_limits(job.limits, self.service.base_config.limits, self.service.settings.ceilings)
        validate_tools(job.tools, self.service.tools.names)
        return self.service.submit(owner, job, kind=kind)

    async def read_json(self, request: Request, owner: str) -> Any:
        """The request's JSON body, refused (413) past the inline-context limit.

        Reading it counts as one of ``owner``'s open requests: a body sent a byte at a time
        (chunked, no deadline in uvicorn) holds its connection for as long as the client
        likes, like an upload."""
        limit = self.service.settings.max_inline_context_bytes + _JSON_BODY_SLACK
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _body_too_large(limit)
        body = bytearray()
        with self.open_requests.hold(owner):
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise _body_too_large(limit)
        # What the body's values cost decoded is bounded by the body limit too (about 700,000
        # values at the default 65 MiB): 64 MiB of [{},{},...] in an inline context decoded to
        # about 1.6 GiB.
        room = limit
        try:
            if len(body) > _THREAD_JSON_BYTES:  # megabytes of JSON: do not stall the loop
                return await anyio.to_thread.run_sync(decode_json, body, room)
            return decode_json(body, room)
        except TooManyValues as exc:
            raise ApiError(
                413,
                "request_too_large",
                f"{exc}; upload large contexts with POST /v1/files and pass the file id",
            ) from exc
        except (ValueError, RecursionError) as exc:
            # ValueError: bad JSON or UTF-8, integers past Python's 4,300-digit limit;
            # RecursionError: arrays or objects nested about 1,000 deep. The tenant's bad
            # request (400), never the service's failure (500 and a traceback in its log).
            raise ApiError(
                400, "invalid_json", f"the request body is not valid JSON: {exc}"
            ) from exc


def decode_json(body: bytes | bytearray, max_overhead: int) -> Any:
    """Strict JSON (RFC 8259): ValueError for ``NaN``, ``Infinity`` and ``-Infinity``, which
    Python's decoder accepts by default; :class:`TooManyValues` (before decoding) when its
    values would cost more than ``max_overhead`` bytes beside their text.

    A NaN passes every range check (all comparisons with it are False): a ``max_cost`` of NaN
    was a job without a cost cap, and a NaN anywhere in a stored request made the job's JSON
    unrenderable (500 on every read). Refused here, no field can carry one.
    """
    decoded_overhead(body, max_overhead)
    value = json.loads(body, parse_constant=_not_json, parse_float=_finite_float)
    # An escaped lone surrogate ("\\ud800") is valid JSON but not text: an inline context
    # holding one was a 500 with a traceback (it cannot be written as UTF-8).
    if json_has_lone_surrogate(body, value):
        raise ValueError("it holds a lone surrogate (\\ud800-\\udfff), which is not text")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number; send a finite number")


def _finite_float(text: str) -> float:
    # A literal past the float range (1e309) decodes to infinity: the same hole as Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range; send a finite number")
    return value


def _body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"the request body is larger than {limit:,} bytes; upload large contexts with "
        "POST /v1/files and pass the file id",
    )


@dataclass(frozen=True)
class Progress:
    """A new trajectory event of the followed job."""

    seq: int
    event: dict[str, Any]


@dataclass(frozen=True)
class Idle:
    """Nothing happened for a keep-alive period; ``status`` is the job's current status."""

    status: str


async def follow_job(
    service: JobService, job_id: str, after: int = 0, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[Progress | Idle | JobRecord]:
    """Yield the job's events after ``after``, an :class:`Idle` when quiet for
    ``keepalive_s``, and finally the ended :class:`JobRecord` (then stop).

    A job deleted while followed ends the stream with its last known record.
    """
    store = service.store
    cursor = after
    while True:
        changed = service.changed(job_id)
        for seq, event in store.events(job_id, cursor):
            cursor = seq
            yield Progress(seq, event)
        current = store.get_job(job_id)
        if current is None or current.final:
            service.forget(job_id)
            if current is not None:
                yield current
            return
        with anyio.move_on_after(keepalive_s) as timer:
            await changed.wait()
        if timer.cancelled_caught:
            yield Idle(current.status)


def job_json(job: JobRecord) -> dict[str, Any]:
    """The API representation of a job (no host paths)."""
    request = {k: v for k, v in job.request.items() if k != "context_path"}
    request["inline_context"] = "context_path" in job.request
    result = None
    if job.result is not None:
        result = {k: v for k, v in job.result.items() if k != "trajectory_path"}
    return {
        "id": job.id,
        "object": "job",
        "kind": job.kind,
        "status": job.status,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "error": job.error,
        "request": request,
        "result": result,
        "answer": result.get("answer") if result else None,
        "links": {
            "self": f"/v1/jobs/{job.id}",
            "events": f"/v1/jobs/{job.id}/events",
            "trajectory": f"/v1/jobs/{job.id}/trajectory",
            "viewer": f"/viewer/index.html#job={job.id}",
        },
    }
