"""The orchestrator's side of one kernel: connection file, ZMQ ipc client, cell execution."""

from __future__ import annotations

import collections
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import anyio
import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from engine.errors import KernelStartError
from engine.sandbox.kernel_messages import (
    KernelMessage,
    KernelProtocolError,
    check_message,
    output_chars,
    reply_expressions,
)
from engine.sandbox.output import HeadTailBuffer
from engine.sandbox.results import CellError
from engine.sandbox.rundir import CONNECTION_FILE, CONTAINER_RUN_DIR, IPC_DIR
from engine.truncate import truncate_middle

# Ports become socket names: <run dir>/ipc/kernel-1 ... kernel-5.
_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
#: Messages each of our sockets queues before ZMQ stops reading from the kernel (which then
#: drops what it publishes): with MAXMSGSIZE this bounds what a flood can make us hold.
RECEIVE_HWM = 4
#: Messages one cell may send before it counts as a flood (a cell's real output arrives in a
#: few hundred: ipykernel batches prints, and the kernel caps what a cell prints).
CELL_MESSAGE_LIMIT = 100_000
#: Output characters one cell may send (or 8 output caps, if more). The kernel's own cap lets
#: about two caps through per stream (head and tail), plots are a few hundred KB each; a
#: sandbox that forges megabyte messages for its own cell (bypassing that cap) would
#: otherwise make the orchestrator decode about 300 MB/s of JSON for the whole cell timeout,
#: near a core of its CPU per sandbox.
CELL_OUTPUT_CHARS = 100_000_000
#: Output for no running cell (a background thread's prints: ipykernel flushes each stream at
#: most five times a second) arriving faster than this many messages per window is a flood.
FLOOD_MESSAGES = 250
FLOOD_WINDOW_S = 5.0
#: How long the stale output before a cell is drained at most.
_DRAIN_S = 2.0
_POLL_S = 0.25
#: How long output may keep arriving after the reply when the idle status never comes (the
#: kernel's PUB socket dropped it): the cell's own output is capped, so this drains it.
_REPLY_GRACE_S = 5.0
_DRAIN_WAIT_MS = 200
#: How long a probe's reply may take before the container's state is asked too.
_PROBE_CHECK_S = 0.1
#: How long a probe waits for the idle status of its request once the reply came (published
#: by the kernel's iopub thread just after it): read here, it costs the next cell no drain.
_PROBE_IDLE_S = 0.5
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_zmq_contexts: dict[int, zmq.asyncio.Context] = {}


def max_message_bytes(output_limit: int) -> int:
    """The largest ZMQ frame accepted from a kernel whose cells print ``output_limit`` chars.

    A frame of ``output_limit`` characters is at most 6 bytes per character as JSON (control
    characters become ``\\u00XX``); the kernel clips results, errors and the answer to fit. A
    larger frame makes ZMQ drop the connection instead of buffering it, so a hostile cell
    cannot push a gigabyte into the orchestrator in one message.
    """
    return max(1 << 20, 8 * output_limit)


def _context(output_limit: int) -> zmq.asyncio.Context:
    size = max_message_bytes(output_limit)
    context = _zmq_contexts.get(size)
    if context is None:
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, size)
        context.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        context.setsockopt(zmq.LINGER, 0)
        _zmq_contexts[size] = context
    return context


def write_connection_file(run_dir: Path) -> dict[str, Any]:
    """Write the kernel's connection file (as the container sees it); return the host's view."""
    key = secrets.token_hex(32)
    common = {"transport": "ipc", "key": key, "signature_scheme": "hmac-sha256", **_PORTS}
    container_view = {**common, "ip": f"{CONTAINER_RUN_DIR}/{IPC_DIR}/kernel"}
    path = run_dir / CONNECTION_FILE
    path.write_text(json.dumps(container_view), encoding="utf-8")
    path.chmod(0o644)
    return {**common, "ip": str(run_dir / IPC_DIR / "kernel")}


def socket_files(run_dir: Path) -> list[Path]:
    return [run_dir / IPC_DIR / f"kernel-{port}" for port in _PORTS.values()]


@dataclass
class RawOutcome:
    """What the kernel said about one execute request."""

    stdout: HeadTailBuffer
    stderr: HeadTailBuffer
    result: str | None
    error: CellError | None
    user_expressions: dict[str, Any]
    interrupted: bool


async def _receive(channel: Any, timeout: float) -> KernelMessage:
    """The next message of ``channel``, checked; raises ``Empty`` when none came in time.

    Anything the kernel sends that jupyter_client cannot decode (bad JSON, JSON nested too
    deep, a header without ``msg_id``, a replayed signature) is a :class:`KernelProtocolError`
    like a message of the wrong shape: the kernel is tenant code.
    """
    try:
        msg = await channel.get_msg(timeout=timeout)
    except Empty:
        raise
    except Exception as exc:
        raise KernelProtocolError(
            f"the sandbox sent a kernel message that cannot be decoded ({type(exc).__name__}), "
            "so it was stopped; do not write to the kernel's sockets from sandbox code"
        ) from exc
    return check_message(msg)


class KernelFlooded(Exception):
    """The kernel sent far more messages than any cell's output needs; the reason says how."""


class _FloodMeter:
    """Raises :class:`KernelFlooded` when foreign output keeps arriving faster than a print."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=FLOOD_MESSAGES)

    def note(self) -> None:
        now = time.monotonic()
        self._times.append(now)
        if len(self._times) == FLOOD_MESSAGES and now - self._times[0] < FLOOD_WINDOW_S:
            raise KernelFlooded(
                f"the sandbox published more than {FLOOD_MESSAGES} output messages in "
                f"{FLOOD_WINDOW_S:g} s that belong to no running cell, so it was stopped; do not "
                "print from background threads"
            )


class KernelSession:
    """A connected client of one kernel. Not safe for concurrent ``execute`` calls."""

    def __init__(self, connection: dict[str, Any], output_limit: int) -> None:
        context = _context(output_limit)
        self._client = AsyncKernelClient(context=context)
        self._flood = _FloodMeter()
        # One reader of the shell and iopub channels at a time (a cell, or a probe): each
        # skips the messages that are not its own, so two would lose each other's replies.
        self._channels_lock = anyio.Lock()
        self._client.load_connection_info(connection)  # type: ignore[arg-type]
        self._client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)

    async def wait_ready(self, timeout: float) -> None:
        try:
            await self._client.wait_for_ready(timeout=timeout)
        except RuntimeError as exc:
            raise KernelStartError(
                f"the sandbox kernel did not answer within {timeout:.0f} s ({exc})"
            ) from exc

    async def probe(self, timeout: float, check_alive: Callable[[], Awaitable[None]]) -> None:
        """Return once the kernel's main thread answers a ``kernel_info_request``; raise
        :class:`TimeoutError` after ``timeout`` seconds without the reply.

        The main thread serves the shell channel, so a reply shows that a cell would run now.
        (The heartbeat is echoed by a thread of its own, which goes on answering while the
        main thread is deadlocked or stuck in a C call.) ``check_alive`` (a Docker call) runs
        only while the reply is late, so a dead container is named within a fraction of a
        second and a live kernel costs one round trip. The request's idle status is read off
        iopub too, so the next cell finds nothing to drain.
        """
        with anyio.fail_after(timeout) as scope:
            async with self._channels_lock:
                msg_id = self._client.kernel_info()
                while True:
                    try:
                        msg = await _receive(self._client.shell_channel, _PROBE_CHECK_S)
                    except Empty:
                        await check_alive()
                        continue
                    if msg.parent_id == msg_id and msg.kind == "kernel_info_reply":
                        break  # (a late reply to an earlier probe is skipped)
                scope.deadline = math.inf  # it answered: the idle status gets a grace of its own
                with anyio.move_on_after(_PROBE_IDLE_S):
                    while True:
                        try:
                            msg = await _receive(self._client.iopub_channel, _PROBE_IDLE_S)
                        except Empty:
                            break
                        idle = msg.content.get("execution_state") == "idle"
                        if msg.parent_id == msg_id and msg.kind == "status" and idle:
                            break

    async def execute(
        self,
        code: str,
        *,
        cell_timeout_s: float,
        output_limit: int,
        silent: bool = False,
        user_expressions: dict[str, str] | None = None,
        check_alive: Callable[[], Awaitable[None]],
        interrupt: Callable[[], Awaitable[None]],
        interrupt_grace: float,
        waited: Callable[[], float] | None = None,
    ) -> RawOutcome:
        """Run ``code``; after ``cell_timeout_s`` s interrupt it and wait ``interrupt_grace``.

        ``waited`` (seconds the kernel has spent waiting on the orchestrator's sub-calls, a
        growing total) extends the deadline by the waiting this cell did.

        ``check_alive`` raises when the kernel has died; it is called whenever the kernel is
        quiet for a moment, so a dead kernel is reported within a fraction of a second.
        Raises :class:`KernelFlooded` when the kernel floods its output channel, and
        :class:`KernelProtocolError` when it sends a malformed message.
        """
        async with self._channels_lock:
            await self._drain_iopub()
            msg_id = self._client.execute(
                code,
                silent=silent,
                store_history=not silent,
                user_expressions=user_expressions or {},
                allow_stdin=False,
                stop_on_error=False,
            )
            stdout, stderr = HeadTailBuffer(output_limit), HeadTailBuffer(output_limit)
            result: str | None = None
            error: CellError | None = None
            interrupted = False
            deadline = time.monotonic() + cell_timeout_s
            waited_before = waited() if waited is not None else 0.0
            iopub = self._client.iopub_channel
            reply: dict[str, Any] | None = None
            reply_seen_at = 0.0
            received = 0
            received_chars = 0
            chars_limit = max(CELL_OUTPUT_CHARS, 8 * output_limit)
            last_check = time.monotonic()
            while True:
                remaining = deadline - time.monotonic()
                if waited is not None and not interrupted:
                    remaining += waited() - waited_before
                if remaining <= 0:
                    if interrupted:
                        raise InterruptIgnoredError()
                    interrupted = True
                    await interrupt()
                    deadline = time.monotonic() + interrupt_grace
                    continue
                now = time.monotonic()
                if reply is not None and now - reply_seen_at > _REPLY_GRACE_S:
                    break  # the idle status was lost (dropped by a full queue): done anyway
                if now - last_check > _POLL_S:
                    # Also while messages keep coming: a flood must not hide a dead kernel or
                    # the reply of a cell whose idle status was dropped.
                    last_check = now
                    await check_alive()
                    if reply is None and (reply := await self._reply_if_ready(msg_id)) is not None:
                        reply_seen_at = now
                try:
                    msg = await _receive(iopub, min(_POLL_S, remaining))
                except Empty:
                    if reply is not None:
                        break  # replied and quiet: the idle status was dropped
                    continue
                received += 1
                if received > CELL_MESSAGE_LIMIT:
                    raise KernelFlooded(
                        f"the sandbox sent more than {CELL_MESSAGE_LIMIT:,} output messages in one "
                        "cell, so it was stopped; print less often (collect results in a variable)"
                    )
                if msg.parent_id != msg_id:
                    self._flood.note()
                    continue
                received_chars += output_chars(msg)
                if received_chars > chars_limit:
                    raise KernelFlooded(
                        f"the sandbox sent more than {chars_limit:,} characters of output in one "
                        "cell, past what the kernel's own output cap lets through, so it was "
                        "stopped; do not write to the kernel's sockets from sandbox code"
                    )
                kind, content = msg.kind, msg.content
                if kind == "stream":
                    target = stdout if content.get("name") == "stdout" else stderr
                    target.write(content.get("text", ""))
                elif kind in ("execute_result", "display_data"):
                    text = content.get("data", {}).get("text/plain")
                    if text is not None:
                        if kind == "execute_result":
                            result = truncate_middle(text, output_limit)
                        else:
                            stdout.write(text + "\n")
                elif kind == "error":
                    traceback = _ANSI.sub("", "\n".join(content.get("traceback", [])))
                    error = CellError(
                        ename=content.get("ename", "Error"),
                        evalue=content.get("evalue", ""),
                        traceback=truncate_middle(traceback, output_limit),
                    )
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
            if reply is None:
                reply = await self._reply(msg_id, check_alive)
            return RawOutcome(
                stdout=stdout,
                stderr=stderr,
                result=result,
                error=error,
                user_expressions=reply_expressions(reply),
                interrupted=interrupted,
            )

    async def _reply(
        self, msg_id: str, check_alive: Callable[[], Awaitable[None]]
    ) -> dict[str, Any]:
        # The reply follows the idle status almost at once; the loop only guards a kernel
        # that dies between the two, or a reply too large to pass (dropped by ZMQ).
        for _ in range(int(10 / _POLL_S)):
            try:
                msg = await _receive(self._client.shell_channel, _POLL_S)
            except Empty:
                await check_alive()
                continue
            if msg.parent_id == msg_id:
                return msg.content
        return {}  # lost: the caller reports an unfinished answer state

    async def _reply_if_ready(self, msg_id: str) -> dict[str, Any] | None:
        """The execute reply if it has arrived (for a cell whose idle status was dropped)."""
        # Bounded: a kernel that keeps sending replies to other requests must not keep the
        # caller here (it looks again a moment later, and the cell's deadline still applies).
        for _ in range(4 * RECEIVE_HWM):
            try:
                msg = await _receive(self._client.shell_channel, 0)
            except Empty:
                return None
            if msg.parent_id == msg_id:
                return msg.content
        return None

    async def _drain_iopub(self) -> None:
        """Drop what the kernel published since the last cell, without decoding it.

        Threads left running by an earlier cell may print; their output belongs to no cell.
        Output that keeps coming faster than any print is a flood (see :class:`_FloodMeter`).
        """
        socket = self._client.iopub_channel.socket
        assert socket is not None
        deadline = time.monotonic() + _DRAIN_S
        drained = False
        while time.monotonic() < deadline:
            # Our queue holds only RECEIVE_HWM messages: once something was pending, give a
            # kernel that keeps publishing a moment to show it.
            if drained and not await socket.poll(int(_POLL_S * 1000)):
                return
            try:
                await socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            drained = True
            self._flood.note()

    def close(self) -> None:
        self._client.stop_channels()


class InterruptIgnoredError(Exception):
    """The cell kept running after the interrupt's grace period."""


async def wait_for_sockets(
    run_dir: Path, timeout: float, check_alive: Callable[[], Awaitable[None]]
) -> None:
    """Wait until the kernel has bound all five sockets.

    jupyter_client would otherwise start talking to a kernel that is still importing, and
    its readiness probe would give up on a slow start.
    """
    files = socket_files(run_dir)
    deadline = time.monotonic() + timeout
    checks = 0
    while not all(path.exists() for path in files):
        if time.monotonic() > deadline:
            raise KernelStartError(
                f"the sandbox kernel did not create its sockets within {timeout:.0f} s; "
                "run `rlm doctor` to check the image and the Docker daemon"
            )
        checks += 1
        if checks % 10 == 0:
            await check_alive()
        await anyio.sleep(0.01)
