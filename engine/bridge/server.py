"""The bridge server: HTTP/1.1 on a Unix socket, built on anyio and h11.

A small hand-rolled server rather than uvicorn: it is anyio-native (runs inside the engine's
task group, cancels cleanly), installs no signal handlers, and adds well under a millisecond
per call. Every connection is served by its own task; requests on one connection are handled
in order (keep-alive). While a handler runs, the connection is watched, so a client that goes
away (for example a kernel interrupted by a cell timeout) cancels its sub-call instead of
letting it run, and pay, to the end.

The sandbox is not trusted, so everything it can make the server hold is bounded: at most
``max_connections`` connections (more are answered 503 and closed), a request head must arrive
within ``header_timeout_s`` once it starts and a body at ``min_body_rate`` after a grace of
``body_timeout_s`` (else 408), an idle keep-alive connection is closed after ``idle_timeout_s``,
and the JSON bodies held in memory by all connections together stay under
``max_buffered_bytes``. Child contexts (``POST /v1/contexts``) never sit in memory: they stream
to a private file, capped by :class:`~engine.bridge.contexts.ChildContextStore`.

Socket I/O uses non-blocking sockets with ``anyio.wait_readable``/``wait_writable`` rather than
anyio's UNIX socket streams: on asyncio those park a read on a future that an fd reader
resolves, and cancelling the read in the loop iteration where data arrives makes the loop
report ``InvalidStateError``, which the disconnect watcher and shutdown do routinely.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import stat
from contextlib import AsyncExitStack
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import h11

from engine.bridge.busy import BusyClock
from engine.bridge.contexts import ChildContextStore
from engine.bridge.handler import BridgeHandler, ToolHandler, answer_batch, checked_text
from engine.bridge.protocol import (
    ROUTES,
    STREAM_ROUTES,
    LlmBatchRequest,
    LlmQueryRequest,
    RlmQueryRequest,
    ToolRequest,
    context_suffix,
    error_body,
    parse_json,
    validate,
)
from engine.errors import (
    BridgeError,
    BridgeRequestError,
    BudgetExceededError,
    ConfigError,
    RLMError,
    SubCallRefusedError,
    ToolError,
)
from engine.json_size import TooManyValues, decoded_overhead
from engine.lifecycle import AsyncResource
from engine.log import get_logger

log = get_logger(__name__)
# The HTTP status of each kind of refused sub-call (the run layer names the kind only).
_REFUSED_STATUS = {"model_not_allowed": 403, "invalid_request": 422}

_RECV_BYTES = 64 * 1024
_MAX_HEAD_BYTES = 16 * 1024
# Decoding JSON this large takes long enough to stall other connections; do it in a thread.
_THREAD_JSON_BYTES = 256 * 1024
# sun_path is 108 bytes including the terminating NUL on Linux.
_MAX_SOCKET_PATH = 107

Outcome = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class BridgeLimits:
    """What one sandbox's code can make the bridge hold; every field bounds one resource."""

    #: connections open at once; more are answered 503 and closed.
    max_connections: int = 16
    #: seconds a keep-alive connection may sit idle between requests.
    idle_timeout_s: float = 300.0
    #: seconds from a request's first byte to the end of its head.
    header_timeout_s: float = 10.0
    #: seconds a body may take, plus one second per ``min_body_rate`` bytes received.
    body_timeout_s: float = 30.0
    min_body_rate: int = 1 << 20
    #: bytes of JSON bodies held in memory by all connections together.
    max_buffered_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_buffered_bytes < 1 or self.min_body_rate < 1:
            raise ConfigError("bridge limits must be positive")
        if min(self.idle_timeout_s, self.header_timeout_s, self.body_timeout_s) <= 0:
            raise ConfigError("bridge timeouts must be positive")


class _Held:
    """Bytes one request holds in the memory budget, released when it ends however it ends."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class _TimedOut(Exception):
    """A client too slow to send its request; answered 408 and closed."""


class _ByteBudget:
    """Bytes shared by all connections; :meth:`acquire` waits until enough are free."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = anyio.Event()

    async def acquire(self, size: int) -> None:
        while size > self.free:
            changed = self._changed
            await changed.wait()
        self.free -= size

    def release(self, size: int) -> None:
        if size:
            self.free += size
            self._changed.set()
            self._changed = anyio.Event()


class BridgeServer(AsyncResource):
    """Serves ``llm_query``, ``llm_batch`` and ``rlm_query`` to one sandbox.

    An async context manager: entering binds ``socket_path`` (mode 0o666 so the sandbox user
    can connect) and starts serving; leaving cancels in-flight handlers, closes every
    connection and unlinks the socket file. ``token`` is the per-task bearer token the sandbox
    must send. Child contexts uploaded to ``/v1/contexts`` may hold at most
    ``max_child_context_bytes`` on the host at once; ``limits`` bound connections, time and
    memory (see :class:`BridgeLimits`).
    """

    def __init__(
        self,
        socket_path: Path,
        token: str,
        handler: BridgeHandler,
        *,
        max_body_bytes: int = 16 << 20,
        max_batch: int = 1024,
        max_child_context_bytes: int = 2 << 30,
        limits: BridgeLimits | None = None,
    ) -> None:
        if not token:
            raise ConfigError("the bridge needs a non-empty token; generate one per task")
        if max_body_bytes <= 0 or max_batch <= 0:
            raise ConfigError("the bridge's max_body_bytes and max_batch must be positive")
        self.socket_path = Path(socket_path)
        self._expected_auth = b"Bearer " + token.encode()
        self._handler = handler
        self.limits = limits or BridgeLimits()
        #: the child contexts' private files (their caps and peak use are public for tests).
        self.contexts = ChildContextStore(max_bytes=max_child_context_bytes)
        self._max_body = min(max_body_bytes, self.limits.max_buffered_bytes)
        self._max_batch = max_batch
        self._buffered = _ByteBudget(self.limits.max_buffered_bytes)
        self._socket_inode: int | None = None
        #: number of connections accepted so far (keep-alive clients reuse one).
        self.connections_accepted = 0
        #: connections refused because ``max_connections`` were open.
        self.connections_refused = 0
        self._open_connections = 0
        #: time the sandbox spent waiting on calls here (its cell timeout does not count it).
        self.waits = BusyClock()

    async def _open(self, stack: AsyncExitStack) -> None:
        stack.callback(log.debug, "bridge stopped", socket=str(self.socket_path))
        self.contexts.open()
        stack.callback(self.contexts.close)
        listener = self._bind()
        stack.callback(listener.close)
        stack.callback(self._unlink_socket)
        task_group = await stack.enter_async_context(anyio.create_task_group())
        # Runs first on exit: cancels the accept loop and every connection's task.
        stack.callback(task_group.cancel_scope.cancel)
        task_group.start_soon(self._accept_loop, listener, task_group)
        log.debug("bridge listening", socket=str(self.socket_path))

    # --- socket ------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        path = self.socket_path
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise BridgeError(
                f"the bridge socket path is too long for a Unix socket "
                f"({len(os.fsencode(path))} bytes, limit {_MAX_SOCKET_PATH}): {path}; "
                "use a shorter run directory (RLM_RUN_DIR)"
            )
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise BridgeError(f"{path} exists and is not a socket; remove it and retry")
            path.unlink()  # left behind by a process that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(os.fspath(path))
            self._socket_inode = os.lstat(path).st_ino
            os.chmod(path, 0o666)  # the sandbox user (uid 1000) must be able to connect
            listener.listen(128)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            self._unlink_socket()
            raise BridgeError(f"the bridge cannot listen on {path}: {exc}") from exc
        return listener

    def _unlink_socket(self) -> None:
        # Only remove the socket we created, never one that replaced it.
        try:
            if os.lstat(self.socket_path).st_ino == self._socket_inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass

    async def _accept_loop(self, listener: socket.socket, task_group: anyio.abc.TaskGroup) -> None:
        while True:
            await anyio.wait_readable(listener)
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:  # e.g. out of file descriptors: back off, keep serving
                log.warning("bridge accept failed", error=str(exc))
                await anyio.sleep(0.1)
                continue
            client.setblocking(False)
            if self._open_connections >= self.limits.max_connections:
                self.connections_refused += 1
                _refuse(client, self.limits.max_connections)
                continue
            self.connections_accepted += 1
            self._open_connections += 1
            task_group.start_soon(self._connection, _Wire(client, self.limits))

    # --- HTTP --------------------------------------------------------------------------------

    async def _connection(self, wire: _Wire) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        try:
            with wire.sock:
                while await self._exchange(conn, wire):
                    conn.start_next_cycle()
        except anyio.BrokenResourceError:
            pass  # the client went away; nothing to answer
        except Exception:
            # One broken connection must never take the server (and its task) down.
            log.exception("bridge connection failed")
        finally:
            self._open_connections -= 1

    async def _exchange(self, conn: h11.Connection, wire: _Wire) -> bool:
        """Serve one request; True if the connection can carry another one."""
        held = _Held()
        try:
            try:
                event = await self._read_head(conn, wire)
                if event is None or isinstance(event, h11.ConnectionClosed):
                    return False
                if not isinstance(event, h11.Request):  # unreachable with a correct h11 state
                    return False
                path = self._check_head(event)
                if path in STREAM_ROUTES:
                    received = await self._receive_context(conn, wire, event)
                    await _send(conn, wire, *received)
                    return conn.our_state is h11.DONE and conn.their_state is h11.DONE
                await self._reserve_body(event, held)
                body = await self._read_body(conn, wire, held)
                await self._reserve_decoded(body, held)
            except _TimedOut as exc:
                log.info("bridge client too slow; closing", reason=str(exc))
                payload = error_body("request_timeout", str(exc))
                if conn.our_state is h11.SEND_RESPONSE:
                    await _send(conn, wire, 408, payload, close=True)
                else:  # no request head yet: h11 has nothing to answer, so write it raw
                    await _send_raw(wire, 408, payload)
                return False
            except BridgeRequestError as exc:
                # The body may be unread: answer and close rather than parse what follows.
                await _send(conn, wire, exc.status, error_body(exc.kind, str(exc)), close=True)
                return False
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    message = f"malformed HTTP request: {exc}"
                    status = exc.error_status_hint
                    await _send(conn, wire, status, error_body("bad_request", message), close=True)
                return False
            outcome = await self._dispatch_watched(conn, wire, path, body)
            del body
            if outcome is None:
                return False  # the client disconnected; its call was cancelled
            await _send(conn, wire, *outcome)
            return conn.our_state is h11.DONE and conn.their_state is h11.DONE
        finally:
            self._buffered.release(held.bytes)

    async def _read_head(self, conn: h11.Connection, wire: _Wire) -> Any:
        """The next request head; ``None`` when an idle keep-alive connection timed out."""
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # pipelined behind the previous request
        with anyio.move_on_after(self.limits.idle_timeout_s):
            data = await wire.recv()
            conn.receive_data(data)
            deadline = anyio.current_time() + self.limits.header_timeout_s
            return await self._next_event_by(conn, wire, deadline, "request head")
        return None  # idle too long: close quietly, the client reconnects when it needs to

    async def _next_event_by(
        self, conn: h11.Connection, wire: _Wire, deadline: float, what: str
    ) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with anyio.move_on_after(deadline - anyio.current_time()):
                conn.receive_data(await wire.recv())  # b"" (EOF) makes h11 report the close
                continue
            limits = self.limits
            raise _TimedOut(
                f"the {what} did not arrive in time (the bridge allows "
                f"{limits.header_timeout_s:g} s for a head and {limits.body_timeout_s:g} s plus "
                f"1 s per {limits.min_body_rate >> 10} KiB for a body); send requests in one go"
            )

    def _body_deadline(self, started: float, received: int) -> float:
        return started + self.limits.body_timeout_s + received / self.limits.min_body_rate

    async def _reserve_body(self, request: h11.Request, held: _Held) -> None:
        """Reserve the declared body size in the memory budget (waits for room, bounded)."""
        length = _content_length(request)
        if not length:
            return
        with anyio.move_on_after(self.limits.body_timeout_s):
            await self._buffered.acquire(length)
            held.bytes = length
            return
        raise self._busy()

    async def _reserve_decoded(self, body: bytearray, held: _Held) -> None:
        """Reserve what ``body``'s values will cost decoded, in the same memory budget.

        The budget counts bytes, but 16 MiB of ``[{},{},...]`` decodes to 404 MiB of Python
        objects; what the values cost beside their text is reserved too (413 when the body
        and its values cannot fit in the whole budget).
        """
        room = self.limits.max_buffered_bytes - len(body)
        try:
            if len(body) > _THREAD_JSON_BYTES:
                extra = await anyio.to_thread.run_sync(decoded_overhead, body, room)
            else:
                extra = decoded_overhead(body, room)
        except TooManyValues as exc:
            raise BridgeRequestError(413, "payload_too_large", str(exc)) from None
        with anyio.move_on_after(self.limits.body_timeout_s):
            await self._buffered.acquire(extra)
            held.bytes += extra
            return
        raise self._busy()

    def _busy(self) -> BridgeRequestError:
        return BridgeRequestError(
            503,
            "busy",
            f"this sandbox's requests in flight already hold the bridge's "
            f"{self.limits.max_buffered_bytes >> 20} MiB of request memory; wait for them "
            "or send smaller requests",
        )

    def _check_head(self, request: h11.Request) -> str:
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if path not in ROUTES:
            raise BridgeRequestError(
                404,
                "not_found",
                f"no bridge endpoint {path}; use one of {', '.join(sorted(ROUTES))}",
            )
        if request.method != b"POST":
            method = request.method.decode("ascii", "replace")
            raise BridgeRequestError(
                405, "method_not_allowed", f"{path} accepts POST only, not {method}"
            )
        auth = b""
        length: int | None = None
        for name, value in request.headers:
            if name == b"authorization" and not auth:
                auth = value
            elif name == b"content-length":
                length = int(value)  # h11 has checked it is a valid number
        if not hmac.compare_digest(auth, self._expected_auth):
            raise BridgeRequestError(
                401,
                "unauthorized",
                "missing or wrong bridge token; send 'Authorization: Bearer $RLM_BRIDGE_TOKEN'",
            )
        if path not in STREAM_ROUTES and length is not None and length > self._max_body:
            raise self._too_large(length)
        return path

    async def _read_body(self, conn: h11.Connection, wire: _Wire, held: _Held) -> bytearray:
        """Read a JSON body, growing ``held`` (the caller releases it) as chunks arrive."""
        if conn.they_are_waiting_for_100_continue:  # e.g. curl with a body over 1 MB
            await wire.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        started = anyio.current_time()
        while True:
            deadline = self._body_deadline(started, len(body))
            event = await self._next_event_by(conn, wire, deadline, "request body")
            if isinstance(event, h11.Data):
                size = len(body) + len(event.data)
                if size > self._max_body:  # chunked bodies have no Content-Length to check
                    raise self._too_large(size)
                if size > held.bytes:  # chunked: reserve as the bytes arrive
                    with anyio.move_on_after(deadline - anyio.current_time()):
                        await self._buffered.acquire(size - held.bytes)
                        held.bytes = size
                    if size > held.bytes:
                        raise self._busy()
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return body
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in body")

    async def _receive_context(
        self, conn: h11.Connection, wire: _Wire, request: h11.Request
    ) -> Outcome:
        """Stream an uploaded child context into the store's private file."""
        suffix = context_suffix(_header(request, b"content-type"))
        length = _content_length(request)
        if length is not None:
            self.contexts.check_room(length)  # refuse before reading a byte
        upload = self.contexts.receiver(suffix)
        try:
            if conn.they_are_waiting_for_100_continue:
                await wire.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
            started = anyio.current_time()
            while True:
                deadline = self._body_deadline(started, upload.size)
                event = await self._next_event_by(conn, wire, deadline, "child context")
                if isinstance(event, h11.Data):
                    await upload.write(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in body")
            context_id = await upload.finish()
        except BaseException:
            await upload.abort()
            raise
        log.debug("bridge child context received", bytes=upload.size)
        return 200, {"context_id": context_id, "bytes": upload.size}

    def _too_large(self, size: int) -> BridgeRequestError:
        return BridgeRequestError(
            413,
            "payload_too_large",
            f"request body of {size} bytes exceeds the bridge limit of {self._max_body} bytes; "
            "send less text per call (split the prompt or the batch)",
        )

    # --- calls -------------------------------------------------------------------------------

    async def _dispatch_watched(
        self, conn: h11.Connection, wire: _Wire, path: str, body: bytearray
    ) -> Outcome | None:
        """Run the call, cancelling it if the client disconnects meanwhile."""
        outcome: Outcome | None = None
        async with anyio.create_task_group() as task_group:

            async def watch() -> None:
                data = await wire.recv()
                if not data:
                    log.info("bridge client disconnected; cancelling its call", path=path)
                    task_group.cancel_scope.cancel()
                    return
                conn.receive_data(data)  # a pipelined next request: h11 keeps it for later

            task_group.start_soon(watch)
            with self.waits.busy():
                outcome = await self._dispatch(path, body)
            task_group.cancel_scope.cancel()
        return outcome

    async def _dispatch(self, path: str, body: bytearray) -> Outcome:
        """Validate and run one call; every failure becomes an error response."""
        try:
            if len(body) > _THREAD_JSON_BYTES:
                payload = await anyio.to_thread.run_sync(parse_json, body)
            else:
                payload = parse_json(body)
            request = validate(path, payload, max_batch=self._max_batch)
            if isinstance(request, ToolRequest) or (
                isinstance(request, LlmQueryRequest) and request.tools
            ):
                return await self._tools(request)
            if isinstance(request, LlmQueryRequest):
                text = await self._handler.llm_query(request.prompt, request.model)
                return 200, {"response": checked_text(text)}
            if isinstance(request, LlmBatchRequest):
                return 200, {
                    "responses": await answer_batch(
                        self._handler, request.prompts, request.model, request.tools
                    )
                }
            return 200, {"response": await self._rlm(request)}
        except BridgeRequestError as exc:
            return exc.status, error_body(exc.kind, str(exc))
        except SubCallRefusedError as exc:
            return _REFUSED_STATUS.get(exc.kind, 403), error_body(exc.kind, str(exc))
        except BudgetExceededError as exc:
            return 429, error_body("budget_exceeded", str(exc), budget=exc.budget)
        except RLMError as exc:
            return 502, error_body(type(exc).__name__, str(exc))
        except Exception as exc:
            log.exception("bridge handler failed", path=path)
            message = f"the orchestrator failed to serve {path}: {type(exc).__name__}: {exc}"
            return 500, error_body("internal_error", message)

    async def _tools(self, request: ToolRequest | LlmQueryRequest) -> Outcome:
        """Host tools: a tool call, or a sub-call that may use tools (see ToolHandler)."""
        handler = self._handler
        if not isinstance(handler, ToolHandler):
            raise BridgeRequestError(404, "not_found", "this sandbox has no tools")
        try:
            if isinstance(request, ToolRequest):
                result = await handler.call_tool(request.name, request.args, request.kwargs)
                return 200, {"result": result}
            text = await handler.llm_query_tools(request.prompt, request.model, request.tools)
            return 200, {"response": checked_text(text)}
        except ToolError as exc:
            return 502, error_body("tool_error", str(exc), exception=exc.exception)

    async def _rlm(self, request: RlmQueryRequest) -> str:
        if request.context_id is None:
            return checked_text(await self._handler.rlm_query(request.prompt, None))
        path = self.contexts.take(request.context_id)
        try:
            return checked_text(await self._handler.rlm_query(request.prompt, path))
        finally:
            # Also on cancellation: the child context must not outlive the call.
            with anyio.CancelScope(shield=True):
                await self.contexts.release(path)


def _header(request: h11.Request, name: bytes) -> bytes:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return b""


def _content_length(request: h11.Request) -> int | None:
    value = _header(request, b"content-length")
    return int(value) if value else None  # h11 has checked it is a valid number


def _refuse(client: socket.socket, limit: int) -> None:
    """Answer a connection past the cap with a 503, without waiting, and close it."""
    payload = error_body(
        "too_many_connections",
        f"this sandbox already has {limit} connections open to the bridge; close some "
        "(or call from fewer threads at once)",
    )
    with client, contextlib.suppress(OSError):
        client.send(_raw_response(503, payload))


def _raw_response(status: int, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _send_raw(wire: _Wire, status: int, payload: dict[str, Any]) -> None:
    with anyio.move_on_after(1):  # a client that does not read gets nothing
        await wire.send_all(_raw_response(status, payload))


class _Wire:
    """One client connection: a non-blocking socket with cancel-safe waits.

    A reply must be read like a request is sent: within ``limits.body_timeout_s`` plus one
    second per ``limits.min_body_rate`` bytes. Sandbox code that never read its replies held
    each connection (and the request memory it reserved) for ever: 16 such connections and
    the sandbox's bridge answered nothing but 503.
    """

    __slots__ = ("limits", "sock")

    def __init__(self, sock: socket.socket, limits: BridgeLimits) -> None:
        self.sock = sock
        self.limits = limits

    async def recv(self) -> bytes:
        """The next bytes from the client; ``b""`` once it has closed or reset the connection."""
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                return self.sock.recv(_RECV_BYTES)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
            except OSError:
                return b""

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``; ``anyio.BrokenResourceError`` if the client is gone."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        limits = self.limits
        deadline = anyio.current_time() + limits.body_timeout_s + len(data) / limits.min_body_rate
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await anyio.wait_writable(self.sock)
                    continue
                log.info("bridge client did not read its reply in time; closing")
                raise anyio.BrokenResourceError("the client did not read its reply") from None
            except OSError as exc:
                raise anyio.BrokenResourceError(f"the bridge client went away: {exc}") from exc
            view = view[sent:]


async def _send(
    conn: h11.Connection,
    wire: _Wire,
    status: int,
    payload: dict[str, Any],
    *,
    close: bool = False,
) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    if status == 405:
        headers.append((b"allow", b"POST"))
    if close:
        headers.append((b"connection", b"close"))
    reason = HTTPStatus(status).phrase.encode()
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await wire.send_all(data)
