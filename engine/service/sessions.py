"""Service sessions: several messages (queries) on one live kernel.

A session is a row of the store's ``sessions`` table; its kernel lives in this process, owned
by one actor task (an :class:`~engine.rlm.session.EngineSession` inside its own
:class:`~engine.rlm.Engine`), started at the session's first message and closed after
``session_idle`` seconds without one, on ``DELETE`` or at shutdown. Each message is a job of
kind ``session`` (status, events, trajectory and cancel through the jobs API); its slot is a
job slot while it runs, an idle kernel holds none (the per-key session limit bounds them).

After a restart (or when the kernel's process is gone) the session's next message starts a
fresh kernel with the same context; the job's result says so in ``kernel_note`` and the
root is told its earlier variables are gone.

With replicas (PostgreSQL) the kernel lives on the replica in ``holder``: a message to
another replica gets a 409 naming the holder (route a session's requests by its id), unless
the holder has been silent for longer than ``session_idle`` (then this replica takes the
session over with a fresh kernel). Message jobs are never put in the shared queue: they are
stored already running under this replica's lease.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.errors import RLMError
from engine.log import get_logger
from engine.rlm.result import RunResult
from engine.service.requests import ApiError, check_query_length, invalid, parse_output_schema
from engine.service.store import KeyLimitReached, KeyLimits, SessionRecord

if TYPE_CHECKING:
    from engine.rlm.trajectory import EventCallback
    from engine.service.jobs import JobService
    from engine.service.store import JobRecord

log = get_logger(__name__)

SESSION_KIND = "session"
LOCAL_HOLDER = "local"
RESTARTED_NOTE = (
    "The service restarted (or the session moved) since the last query: the kernel and its "
    "variables are gone; this query runs on a fresh kernel with the same context."
)
IDLE_REASON = "idle"
ENDED_REASON = "ended by the user"


#: What every session id starts with (its folder in the data dir is named by it).
SESSION_ID_PREFIX = "sess-"


def new_session_id() -> str:
    return SESSION_ID_PREFIX + secrets.token_hex(8)


@dataclass
class _Message:
    query: str
    task_id: str
    output_schema: dict[str, Any] | None
    on_event: EventCallback
    done: anyio.Event = field(default_factory=anyio.Event)
    result: RunResult | None = None
    error: str | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    kernel_note: str = ""


@dataclass
class _Live:
    """A session whose actor runs in this process."""

    record: SessionRecord
    send: MemoryObjectSendStream[_Message | None]
    receive: MemoryObjectReceiveStream[_Message | None]
    stopped: anyio.Event = field(default_factory=anyio.Event)
    kernel_note: str = ""
    #: why the actor stopped by itself (idle, or the kernel failed): the session's close reason
    failure: str | None = None


class SessionManager:
    """The sessions whose kernels live in this service process."""

    def __init__(
        self, service: JobService, idle_s: float, max_per_key: int, *, max_kernels: int = 16
    ) -> None:
        self.service = service
        self.idle_s = idle_s
        self.max_per_key = max_per_key
        self.max_kernels = max_kernels
        self._live: dict[str, _Live] = {}

    @property
    def holder(self) -> str:
        """This process's name in ``sessions.holder``."""
        replica = self.service.replica
        return replica.id if replica is not None else LOCAL_HOLDER

    # --- the API's operations --------------------------------------------------------------

    def create(self, owner: str, body: Any) -> SessionRecord:
        """``POST /v1/sessions``: validate, store the context, record the session."""
        from engine.service.jobs import too_many, validate_limits, validate_tools
        from engine.service.requests import limits_with, parse_job_request

        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object (context or file_id, ...)")
        for job_only in ("output_schema", "max_retries"):
            if job_only in body:
                raise invalid(f'"{job_only}" belongs to a message, not to the session', job_only)
        if "query" in body:
            raise invalid(
                "a session is created without a query; send it with POST "
                "/v1/sessions/{id}/messages",
                "query",
            )
        # The same fields as a job (query aside), validated the same way.
        request = parse_job_request({**body, "query": "session"})
        service = self.service
        validate_limits(request.limits, service.base_config.limits, service.settings.ceilings)
        validate_tools(request.tools, service.tools.names)
        service.check_models(
            request.model,
            request.sub_model,
            limits_with(service.base_config.limits, request.limits),
        )
        open_now = service.store.count_open_sessions(owner)
        if open_now >= self.max_per_key:  # early; the store checks again as it writes
            raise too_many(KeyLimitReached("sessions", open_now, self.max_per_key))
        service.check_files(owner, request.file_ids)
        session_id = new_session_id()
        stored = request.to_dict()
        del stored["query"]
        # The inline context and the row count for the key's storage quota (413 past it);
        # the context's bytes are released when the session closes.
        context_bytes = service.keep_request(owner, session_id, stored, request.context)
        with service.storing(session_id):
            record = service.store.add_session(
                session_id,
                owner=owner,
                request=stored,
                holder=self.holder,
                context_bytes=context_bytes,
                limits=KeyLimits(
                    storage_bytes=service.settings.max_storage_per_key,
                    open_sessions=self.max_per_key,
                ),
            )
        return record

    def own(self, session_id: str, owner: str) -> SessionRecord:
        """The session if ``owner`` owns it; 404 otherwise."""
        record = self.service.store.get_session(session_id)
        if record is None or record.owner != owner:
            raise ApiError(
                404, "not_found", f"no session {session_id!r}; create one with POST /v1/sessions"
            )
        return record

    def submit_message(self, owner: str, session_id: str, body: Any) -> JobRecord:
        """``POST /v1/sessions/{id}/messages``: a job of kind ``session`` for the query."""
        from engine.service.requests import JobRequest

        record = self.own(session_id, owner)
        if not isinstance(body, dict):
            raise invalid('the request body must be a JSON object with "query"')
        unknown = sorted(set(body) - {"query", "wait", "output_schema"})
        if unknown:
            raise invalid(
                f"unknown field(s) {', '.join(unknown)}; known: output_schema, query, wait",
                unknown[0],
            )
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise invalid('"query" is required: the question for this session', "query")
        # As for a job: a message's query was unbounded (up to the 65 MiB body), stored with
        # its job and sent in every read and listing of it.
        check_query_length(query)
        if not record.open:
            raise ApiError(
                409,
                "conflict",
                f"session {session_id} is closed ({record.closed_reason}); its history stays "
                "readable, create a new session to ask more",
            )
        self._check_holder(record)
        if session_id not in self._live and len(self._live) >= self.max_kernels:
            # An idle session's kernel holds no job slot: without this ceiling, many keys'
            # sessions would keep any number of containers alive.
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"this service already keeps {len(self._live)} session kernels alive (limit "
                f"{self.max_kernels}, --max-session-kernels); retry when one is ended or idle",
            )
        request = JobRequest(
            query=query,
            output_schema=parse_output_schema(body.get("output_schema"), "output_schema"),
            session_id=session_id,
        )
        return self.service.submit(owner, request, kind=SESSION_KIND)

    def _check_holder(self, record: SessionRecord) -> None:
        holder = record.holder
        if holder == self.holder or holder == LOCAL_HOLDER or not self.service.store.shared:
            return
        if time.time() - record.last_active > self.idle_s:
            return  # the holder let it go idle (or died): this replica takes it over
        raise ApiError(
            409,
            "session_elsewhere",
            f"session {record.id}'s kernel lives on replica {holder}; send its requests there "
            "(route by session id), or wait until it has been idle for "
            f"{self.idle_s:g} s",
        )

    async def end(self, session_id: str, reason: str = ENDED_REASON) -> None:
        """Close the session: its kernel stops (here), its history stays readable."""
        self.service.store.close_session(session_id, reason)
        live = self._live.get(session_id)
        if live is not None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await live.send.send(None)
            with anyio.move_on_after(60):
                await live.stopped.wait()
        self._drop_context(session_id)

    def _drop_context(self, session_id: str) -> None:
        """Remove a closed session's inline context (its turns and jobs stay) and release its
        bytes from the owner's storage quota."""
        from engine.service.jobs import context_key

        store = self.service.store
        record = store.get_session(session_id)
        if record is None or not record.request.get("context_path"):
            return
        Path(record.request["context_path"]).unlink(missing_ok=True)
        if store.shared:
            store.delete_blob(context_key(session_id))
        store.release_context(session_id)

    # --- running a message (called by the job runner) --------------------------------------

    async def run_message(self, job: JobRecord, on_event: EventCallback) -> tuple[RunResult, str]:
        """Run a message job on its session's kernel (starting it if needed); returns the
        result and the kernel note ("" unless the query started on a fresh kernel)."""
        session_id = job.request["session_id"]
        record = self.service.store.get_session(session_id)
        if record is None or not record.open:
            raise RLMError(f"session {session_id} is closed; create a new session")
        live = self._live.get(session_id)
        if live is None:
            if len(self._live) >= self.max_kernels:  # the strict check (submit's may race)
                raise RLMError(
                    f"this service already keeps {len(self._live)} session kernels alive "
                    f"(limit {self.max_kernels}); send the message again when one is ended"
                )
            live = self._start(record)
        message = _Message(job.request["query"], job.id, job.request.get("output_schema"), on_event)
        try:
            await live.send.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RLMError(
                f"session {session_id} closed while this message arrived; create a new session"
            ) from None
        try:
            await message.done.wait()
        except anyio.get_cancelled_exc_class():
            message.scope.cancel()  # stop the query in the actor; the kernel stays
            raise
        if message.result is None:
            raise RLMError(message.error or "the session's kernel stopped")
        return message.result, message.kernel_note

    def _start(self, record: SessionRecord) -> _Live:
        send, receive = anyio.create_memory_object_stream[_Message | None](16)
        # Turns made before this process held the kernel: their variables are gone.
        note = RESTARTED_NOTE if record.turns else ""
        live = _Live(record, send, receive, kernel_note=note)
        self._live[record.id] = live
        self.service.start_task(self._actor, live)
        return live

    async def _actor(self, live: _Live) -> None:
        """Own the session's engine and kernel; answer messages until idle or ended."""
        from engine.rlm import Engine
        from engine.rlm.session import SessionTurn

        record = live.record
        service = self.service
        pending: _Message | None = None
        try:
            config = service.session_config(record)
            context = service.context_for(record.id, record.request)
            history = [
                SessionTurn(t["query"], t.get("answer", ""), t.get("stop_reason", ""), t["job_id"])
                for t in record.turns
            ]
            async with (
                Engine(
                    config, tools=service.tools, slots=service.slots, pool=service.pool
                ) as engine,
                engine.session(
                    context,
                    session_id=record.id,
                    tools=record.request.get("tools"),
                    history=history,
                    kernel_note=live.kernel_note,
                ) as session,
            ):
                while True:
                    with anyio.move_on_after(self.idle_s) as idle:
                        pending = await live.receive.receive()
                    if idle.cancelled_caught:
                        live.failure = IDLE_REASON
                    if pending is None:
                        break  # ended, or idle (closed below)
                    message, pending = pending, None
                    with message.scope:
                        message.result = await session.ask(
                            message.query,
                            message.on_event,
                            task_id=message.task_id,
                            output_schema=message.output_schema,
                        )
                    if message.result is not None:
                        message.kernel_note = session.turns[-1].kernel_note
                        service.store.add_turn(
                            record.id,
                            {
                                "job_id": message.task_id,
                                "query": message.query,
                                "answer": message.result.answer,
                                "stop_reason": message.result.stop_reason,
                                "kernel_note": message.kernel_note,
                            },
                            self.holder,
                        )
                    else:
                        message.error = "the query was cancelled"
                    message.done.set()
        except Exception as exc:  # the kernel could not start (or a bug): fail the message
            log.exception("session.failed", session=record.id)
            live.failure = f"the session's kernel failed: {exc}"
            if pending is not None:
                pending.error = live.failure
                pending.done.set()
        finally:
            self._live.pop(record.id, None)
            current = service.store.get_session(record.id)
            # At shutdown (cancelled) the session stays open: the next process's first
            # message starts a fresh kernel and says so.
            if current is not None and current.open and live.failure is not None:
                service.store.close_session(record.id, live.failure)
                self._drop_context(record.id)
            # Whatever was still waiting is told the kernel is gone.
            # (Without awaiting: at shutdown this task is cancelled.)
            live.send.close()
            while True:
                try:
                    left = live.receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if left is not None:
                    left.error = live.failure or "the session was closed"
                    left.done.set()
            live.receive.close()
            live.stopped.set()

    # --- idle sessions without a kernel here -------------------------------------------------

    def close_idle(self) -> int:
        """Close open sessions idle for longer than ``idle_s`` that have no kernel here."""
        cutoff = time.time() - self.idle_s
        closed = 0
        for record in self.service.store.sessions(status="open"):
            if record.id in self._live or record.last_active >= cutoff:
                continue
            if self.service.store.close_session(record.id, IDLE_REASON):
                self._drop_context(record.id)
                closed += 1
        return closed

    async def close_idle_forever(self) -> None:
        period = max(min(self.idle_s / 4, 60.0), 0.5)
        while True:
            await anyio.sleep(period)
            try:
                self.close_idle()
            except RLMError as exc:
                log.warning("session.sweep_failed", error=str(exc))
