"""A warm pool: started, locked-down sandboxes with a ready kernel, each waiting for one task.

A cold start (container, kernel, runtime import) takes about a second; a task that claims a
warm sandbox pays only for its context and its environment (:meth:`Sandbox.claim`). What is
prepared before the task is known is what every task of the pool's :class:`SandboxConfig`
shares: the container with all its limits (memory, CPUs, pids, tmpfs sizes and inodes, no
network, read-only root, dropped capabilities, the runtime), the kernel, the runtime's
modules, the locked run directory. What is per task arrives at claim time: the context
(staged inside the read-only run directory), the bridge's token and socket, the host tools.

Each warm sandbox serves one task and is destroyed after it, never returned to the pool. A
task whose configuration differs from the pool's in anything fixed at container start, or
whose context needs more memory or copying than a warm sandbox allows, gets a cold sandbox
(logged as ``pool.miss`` with the reason), never one with other limits.

A warm sandbox can die while it waits (its container killed, OOM-killed or stopped, its
kernel killed or frozen, or its main thread stuck). Before one is handed out,
:meth:`Sandbox.probe` checks that its kernel's main thread answers (one
``kernel_info_request`` on the shell channel; Docker is asked only when the reply is late); a
dead one is discarded (``pool.discarded`` with the reason, counted in
:attr:`WarmPool.discarded`, its container removed) and the task gets the next warm sandbox or
a cold one. The refill loop probes the idle ones every ``sweep_s`` seconds too, so that a dead
one is replaced before a task asks.

One task group owns the refill loop: it starts one sandbox at a time up to ``size``, drops
the idle sandboxes when no task asked for one for ``idle_s`` seconds, and keeps busy plus warm
sandboxes within ``max_sandboxes``. Leaving the pool's ``async with`` (also by cancellation)
removes every sandbox it started and not handed out, then sweeps Docker for containers with
its label (:data:`docker_api.LABEL_POOL`); the orphan reaper removes those of a crashed
process, as for every sandbox.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import docker.errors

from engine.errors import RLMError, SandboxError
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.sandbox import docker_api
from engine.sandbox.config import SandboxConfig
from engine.sandbox.rundir import ContextTooLargeError
from engine.sandbox.sandbox import TASK_ENV, Sandbox

log = get_logger(__name__)

#: The most bytes of a context a claim copies into a warm sandbox (what cannot be hard-linked);
#: past this a cold sandbox, which bind-mounts the path, starts as fast.
DEFAULT_COPY_LIMIT = 64 << 20
#: Warm sandboxes ``rlm serve`` keeps ready unless ``warm_pool`` says otherwise.
DEFAULT_SERVICE_POOL = 2
#: How long the refill loop sleeps between looks when nothing wakes it (idle shrink checks).
_POLL_S = 1.0
_MAX_BACKOFF_S = 60.0
#: How long an idle sandbox's kernel may take to answer before it counts as dead: an idle main
#: thread answers in tens of milliseconds even on a busy host.
DEFAULT_PROBE_TIMEOUT_S = 2.0
#: How often the refill loop probes the idle sandboxes.
DEFAULT_SWEEP_S = 30.0


class WarmPool(AsyncResource):
    """Keeps up to ``size`` warm sandboxes of ``config`` ready; :meth:`open` hands one out.

    ``config``'s per-task variables (:data:`TASK_ENV`) are ignored: each task brings its own.
    ``max_sandboxes`` (None: no limit) bounds busy plus warm sandboxes, so a pool never holds
    a slot a task needs. ``refill`` False starts ``size`` sandboxes once and never replaces
    a claimed one (a one-shot run's first sandbox, started while it sets up). Use from one
    event loop, as an async context manager.
    """

    def __init__(
        self,
        config: SandboxConfig,
        size: int,
        *,
        idle_s: float = 300.0,
        max_sandboxes: int | None = None,
        copy_limit: int = DEFAULT_COPY_LIMIT,
        refill: bool = True,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        sweep_s: float = DEFAULT_SWEEP_S,
    ) -> None:
        if size < 0:
            raise SandboxError(f"the warm pool size must be 0 or more, got {size}")
        if idle_s <= 0:
            raise SandboxError(f"the warm pool idle timeout must be positive, got {idle_s}")
        env = {key: value for key, value in config.env.items() if key not in TASK_ENV}
        self.config = dataclasses.replace(config, env=env)
        self.size = size
        self.idle_s = idle_s
        self.max_sandboxes = max_sandboxes
        self.copy_limit = copy_limit
        self.refill = refill
        self.probe_timeout_s = probe_timeout_s
        self.sweep_s = sweep_s
        #: sandboxes started so far (a pool that does not refill stops at ``size``).
        self.started = 0
        self.pool_id = secrets.token_hex(6)
        #: sandboxes open for tasks (warm or cold) through :meth:`open`.
        self.busy = 0
        #: tasks served warm and cold, for metrics and tests.
        self.hits = 0
        self.misses = 0
        #: warm sandboxes found dead before a task got them (see :meth:`_discard`).
        self.discarded = 0
        #: ready sandboxes, oldest first, with the time each became ready.
        self._ready: deque[tuple[Sandbox, float]] = deque()
        self._starting = 0
        self._start_scope: anyio.CancelScope | None = None
        self._waiters = 0
        self._changed = anyio.Event()
        self._wake = anyio.Event()
        self._last_asked = time.monotonic()
        self._last_swept = time.monotonic()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def ready(self) -> int:
        """Warm sandboxes waiting for a task."""
        return len(self._ready)

    @property
    def starting(self) -> int:
        """Warm sandboxes being started."""
        return self._starting

    async def _open(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self._remove_all)
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._tg.cancel_scope.cancel)
        self._last_asked = time.monotonic()
        if self.size:
            # Returns once the first sandbox counts as starting: a task asking right away
            # waits for it rather than starting a cold one beside it.
            await self._tg.start(self._refill)
        log.info("pool.opened", pool=self.pool_id, size=self.size, idle_s=self.idle_s)

    # --- handing out --------------------------------------------------------------------------

    def mismatch(self, config: SandboxConfig) -> str | None:
        """Why a task with ``config`` cannot use this pool's sandboxes (None: it can)."""
        if self.size == 0:
            return "the warm pool is off (size 0)"
        env = {key: value for key, value in config.env.items() if key not in TASK_ENV}
        if dataclasses.replace(config, env=env) == self.config:
            return None
        differs = [
            item.name
            for item in dataclasses.fields(SandboxConfig)
            if item.name != "env" and getattr(config, item.name) != getattr(self.config, item.name)
        ]
        if env != self.config.env:
            differs.append("env")
        return "the task's sandbox settings differ from the pool's: " + ", ".join(differs)

    @asynccontextmanager
    async def open(
        self, config: SandboxConfig, *, context: Any, task_id: str
    ) -> AsyncIterator[Sandbox]:
        """A started sandbox for one task: a warm one when the pool can serve ``config`` and
        ``context``, else a cold one. Leaving the block removes it (never reused)."""
        if not self.is_open:
            raise SandboxError("the warm pool is not open; use `async with WarmPool(...)`")
        self.busy += 1
        try:
            sandbox, reason = await self._claim(config, context=context, task_id=task_id)
            if sandbox is None:
                await self._make_room()
                sandbox = Sandbox(config, context=context, task_id=task_id)
                if self.size:  # a pool of size 0 is off: nothing to report
                    self.misses += 1
                    log.info("pool.miss", pool=self.pool_id, task_id=task_id, reason=reason)
                    sandbox.pool_miss = reason
            else:
                self.hits += 1
            async with sandbox:
                yield sandbox
        finally:
            self.busy -= 1
            self._poke()

    async def _claim(
        self, config: SandboxConfig, *, context: Any, task_id: str
    ) -> tuple[Sandbox | None, str]:
        reason = self.mismatch(config)
        if reason is not None:
            return None, reason
        self._last_asked = time.monotonic()
        self._poke()
        missed = "no warm sandbox was ready"
        while True:
            sandbox = await self._next_ready(config.start_timeout_s)
            if sandbox is None:
                return None, missed
            dead = await sandbox.probe(self.probe_timeout_s)
            if dead is not None:
                self._discard(sandbox, dead)
                missed = f"the warm sandbox had died ({dead}) and no other was ready"
                continue
            try:
                await sandbox.claim(
                    config, context=context, task_id=task_id, copy_limit=self.copy_limit
                )
            except ContextTooLargeError as exc:
                await sandbox.close()
                return None, str(exc)
            except (SandboxError, OSError) as exc:
                # Died between the probe and the claim (or Docker lost it): try the next one.
                self._discard(sandbox, str(exc))
                missed = f"the warm sandbox failed its claim ({exc}) and no other was ready"
                continue
            except BaseException:
                await sandbox.close()
                raise
            assert self._tg is not None
            self._tg.start_soon(sandbox.name_after_task)  # off the claim's path
            return sandbox, ""

    async def _next_ready(self, timeout: float) -> Sandbox | None:
        """The oldest warm sandbox; waits for one being started when no other task waits
        for it (it is further along than a cold start would be). None: none is coming."""
        with anyio.move_on_after(timeout + 10):
            while True:
                if self._ready:
                    return self._ready.popleft()[0]
                if self._starting <= self._waiters:
                    return None
                self._waiters += 1
                try:
                    await self._changed.wait()
                finally:
                    self._waiters -= 1
        return None

    # --- the refill loop ----------------------------------------------------------------------

    def _poke(self) -> None:
        self._wake.set()

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _capacity(self) -> int:
        """How many warm sandboxes (ready or starting) the pool may hold now."""
        if self.max_sandboxes is None:
            return self.size
        return min(self.size, max(0, self.max_sandboxes - self.busy))

    def _should_start(self) -> bool:
        if not self.refill and self.started >= self.size:
            return False
        if time.monotonic() - self._last_asked > self.idle_s:
            return False  # idle: start again when a task asks
        return len(self._ready) + self._starting < self._capacity()

    async def _refill(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        failures = 0
        while True:
            self._drop_excess()
            if self._ready and time.monotonic() - self._last_swept > self.sweep_s:
                await self._sweep()
            if self._should_start():
                if await self._start_one(report):
                    failures = 0
                else:
                    failures += 1
                    await anyio.sleep(min(_MAX_BACKOFF_S, 2.0**failures))
                continue
            report()
            self._wake = anyio.Event()
            with anyio.move_on_after(_POLL_S):
                await self._wake.wait()

    async def _start_one(self, report: Callable[[], None]) -> bool:
        sandbox = Sandbox.for_pool(self.config, self.pool_id)
        self.started += 1
        self._starting += 1
        report()
        try:
            with anyio.CancelScope() as scope:
                self._start_scope = scope
                await sandbox.start()
            if scope.cancel_called:  # made room for a cold sandbox
                await sandbox.close()  # start() closed it already, unless it had just ended
                return True
        except (RLMError, OSError, docker.errors.DockerException) as exc:
            log.warning("pool.start_failed", pool=self.pool_id, error=str(exc))
            return False
        finally:
            self._start_scope = None
            self._starting -= 1
            self._changed_now()
        self._ready.append((sandbox, time.monotonic()))
        self._changed_now()
        log.debug("pool.ready", pool=self.pool_id, ready=len(self._ready))
        return True

    def _discard(self, sandbox: Sandbox, reason: str) -> None:
        """Count, log and remove (off the caller's path) a warm sandbox found dead; the refill
        loop starts its replacement."""
        self.discarded += 1
        log.warning("pool.discarded", pool=self.pool_id, sandbox=sandbox.task_id, reason=reason)
        assert self._tg is not None
        self._tg.start_soon(sandbox.close)  # removes the container and the run directory
        self._poke()

    async def _sweep(self) -> None:
        """Probe the idle sandboxes; discard the dead ones a task has not taken meanwhile
        (a task that took one probes it itself)."""
        for sandbox, since in list(self._ready):
            if (sandbox, since) not in self._ready:
                continue  # a task took it while an earlier one was probed
            dead = await sandbox.probe(self.probe_timeout_s)
            if dead is not None and (sandbox, since) in self._ready:
                self._ready.remove((sandbox, since))
                self._discard(sandbox, dead)
        self._last_swept = time.monotonic()

    def _drop_excess(self) -> None:
        """Drop ready sandboxes beyond the capacity, and those idle for ``idle_s`` with no
        task asking meanwhile (the pool then stays empty until a task asks again)."""
        now = time.monotonic()
        excess = len(self._ready) + self._starting - self._capacity()
        while self._ready:
            sandbox, since = self._ready[0]
            idle = now - max(since, self._last_asked) > self.idle_s
            if excess <= 0 and not idle:
                break
            self._ready.popleft()
            excess -= 1
            log.info("pool.shrunk", pool=self.pool_id, ready=len(self._ready), idle=idle)
            assert self._tg is not None
            self._tg.start_soon(sandbox.close)

    async def _make_room(self) -> None:
        """Before a cold start: keep busy plus warm sandboxes within ``max_sandboxes``."""
        if self.max_sandboxes is None:
            return
        while self.busy + len(self._ready) + self._starting > self.max_sandboxes:
            if self._ready:
                await self._ready.popleft()[0].close()
            elif self._start_scope is not None:
                self._start_scope.cancel()
                await self._changed.wait()
            else:
                return

    async def _remove_all(self) -> None:
        with anyio.CancelScope(shield=True):
            while self._ready:
                await self._ready.popleft()[0].close()
            await docker_api.call(_remove_labelled, self.pool_id)
        log.info(
            "pool.closed",
            pool=self.pool_id,
            hits=self.hits,
            misses=self.misses,
            discarded=self.discarded,
        )


def _remove_labelled(pool_id: str) -> None:
    """Remove whatever container of the pool is left (a safety net after a failed close; the
    pool closes after the tasks it served, so none of them is busy)."""
    for container in docker_api.list_labelled([f"{docker_api.LABEL_POOL}={pool_id}"]):
        try:
            docker_api.remove(container.id)
        except docker.errors.APIError as exc:
            log.warning("pool.remove_failed", container=container.name, error=str(exc))
