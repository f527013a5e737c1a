"""One task's sandbox: a hardened container running one IPython kernel."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import docker.errors
import zmq
from docker.models.containers import Container

from engine.errors import (
    ContextError,
    KernelDiedError,
    KernelStartError,
    SandboxClosedError,
    SandboxError,
)
from engine.log import get_logger
from engine.sandbox import container as containers
from engine.sandbox import docker_api, kernel, reaper, rundir, runtime
from engine.sandbox.config import SandboxConfig, format_size
from engine.sandbox.instance import instance_id
from engine.sandbox.kernel_messages import KernelProtocolError
from engine.sandbox.results import ContextInfo, ExecResult, KernelState, timeout_error
from engine.settings import DEFAULT_CELL_TIMEOUT_S

log = get_logger(__name__)

_STATE_EXPRESSION = {"rlm": "__import__('rlm_runtime').state()"}
#: What a warm kernel runs before any task is known: the runtime and everything it imports.
_WARM_UP = "import rlm_runtime, rlm_runtime.bridge_client, rlm_runtime.tools"
#: The environment variables a task gives a warm kernel when it claims it. The runtime reads
#: them when it is called, never at process start, so setting them late changes nothing else.
TASK_ENV = frozenset({"RLM_BRIDGE_TOKEN", "RLM_DEPTH", "RLM_TOOLS"})


class Sandbox:
    """Owns a container, its kernel connection and its run directory for one task.

    Use it as an async context manager; leaving the block (also by cancellation or an error)
    removes the container and the run directory::

        async with Sandbox(SandboxConfig(), context=Path("big.txt")) as sandbox:
            result = await sandbox.execute("print(len(context))")

    ``context`` is a ``Path`` (a file or a directory, mounted read-only), a ``str`` (text), any
    other JSON-able value, or ``None``.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        context: Any = None,
        task_id: str | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self.task_id = task_id or secrets.token_hex(6)
        self._context = context
        self._container: Container | None = None
        self._kernel: kernel.KernelSession | None = None
        self._run_dir: Path | None = None
        self._lock = anyio.Lock()
        self._dead_reason: str | None = None
        self._frozen = False
        self._closed = False
        #: seconds the kernel has spent waiting on its bridge's sub-calls (set by whoever
        #: serves the bridge); a cell's timeout does not count that waiting.
        self.wait_clock: Callable[[], float] | None = None
        self.memory_bytes = self.config.memory_bytes
        #: the bytes of child contexts the sandbox may hand over at once through the bridge
        #: (see ``SandboxConfig.disk_bytes``).
        self.disk_limit_bytes = self.config.disk_bytes
        #: the OCI runtime in force (``None``: Docker's default), known once started.
        self.runtime: str | None = None
        self.context_info: ContextInfo | None = None
        self.startup_seconds: float | None = None
        #: True once a task claimed this sandbox from a warm pool (see :mod:`.pool`).
        self.warm = False
        #: the warm pool that started this sandbox, None for a task's own (cold) sandbox.
        self.pool_id: str | None = None
        #: why a task that asked a warm pool got this cold sandbox instead (None: it did not).
        self.pool_miss: str | None = None

    @classmethod
    def for_pool(cls, config: SandboxConfig, pool_id: str) -> Sandbox:
        """A sandbox whose :meth:`start` boots a kernel for no task yet (a warm pool's).

        No task's data reaches it before :meth:`claim`, and it serves that one task only.
        """
        sandbox = cls(config, task_id=f"warm-{secrets.token_hex(6)}")
        sandbox.pool_id = pool_id
        return sandbox

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            raise SandboxClosedError("the sandbox is not started; use `async with Sandbox(...)`")
        return self._run_dir

    async def __aenter__(self) -> Sandbox:
        if not self.warm:  # a claimed warm sandbox is started already
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the run dir and container, connect to the kernel and load the context."""
        if self._closed or self._run_dir is not None:
            raise SandboxError("a Sandbox can be started only once")
        started = time.perf_counter()
        await reaper.reap_orphans_once()
        try:
            await self._start(started)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise

    async def _start(self, started: float) -> None:
        self._run_dir = rundir.create_run_dir(self.config.run_root, self.task_id)
        if self.pool_id is None:
            staged = await anyio.to_thread.run_sync(
                rundir.stage_context, self._context, self._run_dir, self.config.max_context_bytes
            )
        else:  # a warm sandbox gets its context at claim time, inside the run directory
            staged = rundir.StagedContext(None, None, 0, mount=False)
        self._context = None  # staged on disk; do not keep a large value alive
        self.memory_bytes = self._memory_for(staged.size_bytes)
        # A child may get the whole context back through rlm_query.
        self.disk_limit_bytes = max(self.config.disk_bytes, 2 * staged.size_bytes)
        connection = kernel.write_connection_file(self._run_dir)
        choice = await docker_api.call(runtime.choose, self.config.runtime)
        self.runtime = choice.name
        kwargs = containers.container_kwargs(
            self.config,
            task_id=self.task_id,
            run_dir=self._run_dir,
            context=staged,
            memory_bytes=self.memory_bytes,
            runtime=choice.name,
            instance=instance_id(),
            pool=self.pool_id,
        )
        self._container = await docker_api.call(containers.create, kwargs)
        await kernel.wait_for_sockets(self._run_dir, self.config.start_timeout_s, self._check_alive)
        self._kernel = kernel.KernelSession(connection, self.config.output_limit_chars)
        with anyio.fail_after(self.config.start_timeout_s + 5):
            await self._kernel.wait_ready(self.config.start_timeout_s)
        if self.pool_id is None:
            self.context_info = await self._setup_runtime(staged.container_path)
        else:
            await self._warm_up()
        rundir.lock_run_dir(self._run_dir)
        self.startup_seconds = time.perf_counter() - started
        log.info(
            "sandbox.started",
            task_id=self.task_id,
            seconds=round(self.startup_seconds, 3),
            context=self.context_info.kind if self.context_info else None,
            context_chars=self.context_info.length_chars if self.context_info else 0,
            memory=format_size(self.memory_bytes),
            runtime=choice.label,
            pool=self.pool_id,
        )

    async def _warm_up(self) -> None:
        """Import the runtime now, so that a task's :meth:`claim` pays only for its context."""
        outcome = await self._run_raw(
            _WARM_UP, self.config.start_timeout_s, silent=True, expressions={}
        )
        if outcome.error is not None:
            raise KernelStartError(
                f"the warm sandbox could not import its runtime: {outcome.error.ename}: "
                f"{outcome.error.evalue}; rebuild the image (`rlm image build`)"
            )

    async def claim(
        self, config: SandboxConfig, *, context: Any, task_id: str, copy_limit: int
    ) -> None:
        """Hand this warm sandbox to one task (called once, by its pool).

        Stages the context inside the read-only run directory (see
        :func:`rundir.stage_context_inline`), gives the kernel the task's environment
        (:data:`TASK_ENV` only: the rest was fixed when the container started, and the pool
        checked that it equals ``config``'s) and loads the context. Raises
        :class:`rundir.ContextTooLargeError` when the context does not fit this sandbox's
        limits (the caller then closes it and starts a cold one).
        """
        if self.pool_id is None or self.warm or self._kernel is None or self._closed:
            raise SandboxError("only an idle warm sandbox can be claimed, and only once")
        started = time.perf_counter()
        self.warm = True
        self.task_id = task_id
        staged = await anyio.to_thread.run_sync(
            rundir.stage_context_inline, context, self.run_dir, copy_limit
        )
        if self._memory_needed(staged.size_bytes) > self.memory_bytes:
            raise rundir.ContextTooLargeError(
                f"the context ({format_size(staged.size_bytes)}) needs more memory than the "
                f"warm sandbox has ({format_size(self.memory_bytes)})"
            )
        self.disk_limit_bytes = max(config.disk_bytes, 2 * staged.size_bytes)
        self.config = config
        env = {key: value for key, value in config.env.items() if key in TASK_ENV}
        self.context_info = await self._setup_runtime(staged.container_path, env)
        self.startup_seconds = time.perf_counter() - started
        log.info(
            "sandbox.claimed",
            task_id=task_id,
            sandbox=self.pool_id,
            seconds=round(self.startup_seconds, 4),
            context=self.context_info.kind,
            context_chars=self.context_info.length_chars,
        )

    async def probe(self, timeout: float) -> str | None:
        """Why this started sandbox cannot run a cell now; None when its kernel serves requests.

        For a warm pool to check an idle sandbox before it hands it out: its container may
        have been killed, stopped or OOM-killed (the kernel is its main process, so a dead
        kernel stops it too) or frozen while it waited, or the kernel's main thread may be
        stuck (deadlocked, or blocked in a C call) while its heartbeat thread still answers.
        One ``kernel_info_request`` over the shell channel, answered by the main thread, when
        all is well; Docker is asked only while the reply is late, for the reason.
        """
        if self._closed:
            return "the sandbox is closed"
        if self._dead_reason:
            return self._dead_reason
        if self._kernel is None:
            return "the sandbox is not started"
        try:
            await self._kernel.probe(timeout, self._check_alive)
        except KernelDiedError as exc:
            return exc.reason
        except TimeoutError:
            return (
                f"its kernel did not answer a request within {timeout:g} s (its main thread is "
                "stuck or busy)"
            )
        except docker.errors.DockerException as exc:  # asking Docker failed: not usable now
            return f"Docker could not say whether it runs ({exc})"
        except (zmq.ZMQError, KernelProtocolError) as exc:  # closed meanwhile, or forged
            return f"its kernel's channel failed ({exc})"
        return None

    async def name_after_task(self) -> None:
        """Rename a claimed warm sandbox's container ``rlm-<task id>``, as a cold one is named,
        so that ``docker ps`` shows whose it is (labels cannot change; they keep the pool's)."""
        if self._container is None or self._closed:
            return
        try:
            await docker_api.call(self._container.rename, f"rlm-{self.task_id}")
        except docker.errors.APIError as exc:  # removed meanwhile, or the name is taken
            log.debug("sandbox.rename_failed", task_id=self.task_id, error=str(exc))

    def _memory_needed(self, context_bytes: int) -> int:
        """The memory limit a context of ``context_bytes`` needs (the configured one or more)."""
        return self.config.memory_for_context(context_bytes)

    def _memory_for(self, context_bytes: int) -> int:
        needed = self._memory_needed(context_bytes)
        if needed <= self.config.memory_bytes:
            return self.config.memory_bytes
        ceiling = self.config.max_memory_bytes
        if ceiling and needed > ceiling:
            raise ContextError(
                f"the context is {format_size(context_bytes)}; loading it needs about "
                f"{format_size(needed)} of sandbox memory, more than the ceiling of "
                f"{format_size(ceiling)} (the host's memory, or RLM_SANDBOX_MAX_MEMORY); "
                "give a smaller context or split it"
            )
        log.info(
            "sandbox.memory_raised",
            task_id=self.task_id,
            configured=format_size(self.config.memory_bytes),
            raised_to=format_size(needed),
        )
        return needed

    async def _setup_runtime(
        self, context_path: str | None, env: dict[str, str] | None = None
    ) -> ContextInfo:
        # A warm kernel learns its task's environment here; the runtime reads these
        # variables when it is called, never at start-up.
        code = f"__import__('os').environ.update({env!r})" if env else ""
        call = (
            f"__import__('rlm_runtime').setup({context_path!r}, "
            f"output_limit={self.config.output_limit_chars})"
        )
        # Loading a 1 GB context takes seconds, not minutes; the cell timeout still bounds it.
        cell_timeout_s = max(DEFAULT_CELL_TIMEOUT_S, self.config.start_timeout_s)
        outcome = await self._run_raw(code, cell_timeout_s, silent=True, expressions={"info": call})
        value = outcome.user_expressions.get("info", {})
        if value.get("status") != "ok":
            message = f"{value.get('ename', 'Error')}: {value.get('evalue', 'no details')}"
            raise ContextError(f"the sandbox could not load the context: {message}")
        info = json.loads(value["data"]["text/plain"])
        return ContextInfo(**info)

    async def execute(
        self, code: str, cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S
    ) -> ExecResult:
        """Run ``code`` in the kernel and return what it printed, returned or raised.

        A cell running longer than ``cell_timeout_s`` seconds, not counting time spent waiting
        on sub-calls (see :attr:`wait_clock`), is interrupted (the kernel keeps its state) and
        reported with ``timed_out=True``. Raises :class:`KernelDiedError` when the kernel dies,
        with the reason.
        """
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        if cell_timeout_s <= 0:
            raise SandboxError("the cell timeout must be positive")
        started = time.perf_counter()
        outcome = await self._run_raw(
            code, cell_timeout_s, silent=False, expressions=_STATE_EXPRESSION
        )
        state = _parse_state(outcome.user_expressions.get("rlm"))
        error = timeout_error(cell_timeout_s) if outcome.interrupted else outcome.error
        return ExecResult(
            stdout=outcome.stdout.getvalue(),
            stderr=outcome.stderr.getvalue(),
            result=outcome.result,
            error=error,
            duration_s=time.perf_counter() - started,
            truncated=bool(
                state.output_dropped or outcome.stdout.truncated or outcome.stderr.truncated
            ),
            timed_out=outcome.interrupted,
            state=state,
        )

    async def _run_raw(
        self, code: str, cell_timeout_s: float, *, silent: bool, expressions: dict[str, str]
    ) -> kernel.RawOutcome:
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        if self._dead_reason:
            raise KernelDiedError(self._dead_reason)
        if self._kernel is None:
            raise SandboxClosedError("the sandbox is not started; use `async with Sandbox(...)`")
        async with self._lock:
            await self._thaw()
            try:
                return await self._kernel.execute(
                    code,
                    cell_timeout_s=cell_timeout_s,
                    output_limit=self.config.output_limit_chars,
                    silent=silent,
                    user_expressions=expressions,
                    check_alive=self._check_alive,
                    interrupt=self._interrupt,
                    interrupt_grace=self.config.interrupt_grace_s,
                    waited=self.wait_clock,
                )
            except kernel.InterruptIgnoredError:
                reason = (
                    f"the cell kept running {self.config.interrupt_grace_s:g} s after it was "
                    "interrupted, so the sandbox was stopped; its variables are lost"
                )
            except (kernel.KernelFlooded, KernelProtocolError) as exc:
                reason = str(exc)
            self._dead_reason = reason
            log.warning("sandbox.stopped", task_id=self.task_id, reason=reason)
            await self._kill()
            raise KernelDiedError(reason)

    async def freeze(self) -> None:
        """Stop every process of the sandbox (the cgroup freezer) until the next cell.

        A session's kernel waits between questions without a sandbox slot: a thread its code
        left running burned a core for as long as the session stayed open (up to
        ``--max-session-kernels`` cores past ``--max-sandboxes``). Frozen, it uses no CPU
        until the next question's first cell thaws it.
        """
        if self._container is None or self._closed or self._frozen or self._dead_reason:
            return
        async with self._lock:
            try:
                await docker_api.call(self._container.pause)
            except docker.errors.APIError as exc:  # it runs on; the next cell still works
                log.warning("sandbox.freeze_failed", task_id=self.task_id, error=str(exc))
                return
            self._frozen = True

    async def _thaw(self) -> None:
        if not self._frozen or self._container is None:
            return
        self._frozen = False
        try:
            await docker_api.call(self._container.unpause)
        except docker.errors.APIError as exc:
            self._dead_reason = f"the sandbox could not be thawed after a pause ({exc})"
            raise KernelDiedError(self._dead_reason) from exc

    async def _check_alive(self) -> None:
        if self._dead_reason:
            raise KernelDiedError(self._dead_reason)
        if self._container is None:
            return
        gvisor_pids = self.config.pids_limit if self.runtime == runtime.GVISOR else None
        reason = await docker_api.call(
            containers.death_reason, self._container, self.memory_bytes, gvisor_pids=gvisor_pids
        )
        if reason:
            self._dead_reason = reason
            log.warning("sandbox.died", task_id=self.task_id, reason=reason)
            raise KernelDiedError(reason)

    async def _interrupt(self) -> None:
        if self._container is None:
            return
        log.info("sandbox.interrupt", task_id=self.task_id)
        try:
            await docker_api.call(self._container.kill, signal="SIGINT")
        except Exception as exc:  # the death check right after reports a dead container
            log.warning("sandbox.interrupt_failed", task_id=self.task_id, error=str(exc))

    async def _kill(self) -> None:
        if self._container is not None:
            await docker_api.call(containers.remove, self._container)

    async def close(self) -> None:
        """Remove the container and the run directory. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._kernel is not None:
                self._kernel.close()
                self._kernel = None
            if self._container is not None:
                try:
                    await docker_api.call(containers.remove, self._container)
                except Exception as exc:  # leave it to the orphan reaper, but say so
                    log.warning("sandbox.remove_failed", task_id=self.task_id, error=str(exc))
                self._container = None
            if self._run_dir is not None:
                await anyio.to_thread.run_sync(rundir.remove_run_dir, self._run_dir)
        log.debug("sandbox.closed", task_id=self.task_id)


def _parse_state(value: object) -> KernelState:
    # The kernel may have sent any JSON here (a forged reply); only a dict is read.
    if not isinstance(value, dict) or value.get("status") != "ok":
        # The user broke the runtime module itself; report an empty, unfinished answer.
        return KernelState()
    data = value.get("data")
    return KernelState.parse(data.get("text/plain") if isinstance(data, dict) else None)


__all__ = ["KernelDiedError", "KernelStartError", "Sandbox"]
