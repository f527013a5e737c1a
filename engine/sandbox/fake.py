"""An in-process sandbox with the kernel's contract, for testing what drives a sandbox.

:class:`FakeSandbox` runs cells with :func:`exec` in a namespace set up the way the real
runtime (``sandbox-image/rlm_runtime``) sets up the kernel's: ``context`` (staged and loaded
by the same code as in the sandbox), ``answer``, ``FINAL``/``FINAL_VAR``/``SHOW_VARS``, and
``llm_query``/``llm_batch``/``rlm_query`` answered by a :class:`~engine.bridge.BridgeHandler`
called directly instead of over the bridge. After each cell it restores ``context`` and the
helpers, normalises ``answer`` and reports a :class:`KernelState`, like the runtime does.

It is **not** isolation: the code runs in the test process. A timed-out cell gets a
``KeyboardInterrupt`` (the real sandbox sends SIGINT); a cell blocked in a C call (e.g.
``time.sleep``) sees it only when the call returns, and one that ignores it past
``interrupt_grace_s`` "kills the kernel" (:class:`KernelDiedError`), as the real one does.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import importlib.util
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from engine.bridge.busy import BusyClock
from engine.bridge.handler import BridgeHandler, answer_batch
from engine.errors import BudgetExceededError, KernelDiedError, RLMError, SandboxClosedError
from engine.lifecycle import AsyncResource
from engine.sandbox import rundir
from engine.sandbox.image import image_source_dir
from engine.sandbox.results import CellError, ContextInfo, ExecResult, KernelState, timeout_error

_POLL_S = 0.005


class BridgeCallError(RuntimeError):
    """Stands for the runtime's exception of the same name: a sub-call failed."""


class BudgetExhausted(RuntimeError):
    """Stands for the runtime's exception of the same name: a task budget is used up."""


@cache
def _runtime(name: str) -> ModuleType:
    """A stdlib-only module of the sandbox's runtime (``rlm_runtime/<name>.py``), so the fake's
    ``context``, ContextInfo and helpers are the ones the kernel would have."""
    path = image_source_dir() / "rlm_runtime" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"engine_fake_runtime_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class FakeSandbox(AsyncResource):
    """An in-process stand-in for :class:`engine.sandbox.Sandbox` (see the module docstring).

    ``handler`` serves the sub-call helpers; without one they raise ``BridgeCallError`` like
    a sandbox without a bridge.
    """

    def __init__(
        self,
        context: Any = None,
        *,
        handler: BridgeHandler | None = None,
        task_id: str | None = None,
        interrupt_grace_s: float = 2.0,
    ) -> None:
        self.task_id = task_id or secrets.token_hex(6)
        self.context_info: ContextInfo | None = None
        self.warm = False  # the fake has no pool
        self.pool_miss: str | None = None
        self.interrupt_grace_s = interrupt_grace_s
        self._context = context
        self._handler = handler
        self._run_dir: Path | None = None
        self._namespace: dict[str, Any] = {}
        self._helpers: dict[str, Any] = {}
        self._value: Any = None
        self._dead_reason: str | None = None
        self._closed = False
        self._out = threading.local()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._lock = anyio.Lock()
        self._restored = False
        self._waits = BusyClock()  # sub-calls, which the cell timeout does not count

    async def _open(self, stack: AsyncExitStack) -> None:
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"rlm-fake-{self.task_id}-"))
        stack.callback(self._close)
        staged = rundir.stage_context(self._context, self._run_dir)
        self._context = None
        path = str(staged.host_path) if staged.host_path is not None else None
        self._value, info = await anyio.to_thread.run_sync(_runtime("context_loader").load, path)
        self.context_info = ContextInfo(**info)
        self._token = anyio.lowlevel.current_token()
        self._helpers = self._make_helpers()
        self._namespace = {
            "__name__": "__main__",
            # print() writes to the running cell's output (cells of several fakes may run at
            # once in one process, so sys.stdout cannot be redirected).
            "__builtins__": {**vars(builtins), "print": self._print},
            "context": self._value,
            "answer": {"content": "", "ready": False},
            **self._helpers,
        }

    def _close(self) -> None:
        self._closed = True
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    # --- executing cells ------------------------------------------------------------------

    async def freeze(self) -> None:
        """Nothing to freeze: the fake runs cells in this process, only while they run."""

    async def execute(self, code: str, cell_timeout_s: float) -> ExecResult:
        """Run ``code``; interrupt it after ``cell_timeout_s`` seconds (state is kept), not
        counting time the cell spent waiting on sub-calls, as the Docker sandbox does."""
        if self._closed or self._run_dir is None:
            raise SandboxClosedError("the fake sandbox is not open")
        if self._dead_reason is not None:
            raise KernelDiedError(self._dead_reason)
        async with self._lock:
            cell = _Cell(code)
            started = time.perf_counter()
            worker = threading.Thread(target=self._run, args=(cell,), daemon=True)
            worker.start()
            waited_before = self._waits.seconds()

            def remaining() -> float:
                spent = time.perf_counter() - started - (self._waits.seconds() - waited_before)
                return cell_timeout_s - spent

            try:
                timed_out = False
                # Woken at the deadline, the cell may have earned more time by waiting.
                while not await cell.wait(max(0.0, remaining())):
                    if remaining() <= 0:
                        timed_out = True
                        break
                if timed_out:
                    cell.interrupt()
                    if not await cell.wait(self.interrupt_grace_s):
                        self._dead_reason = (
                            f"the cell kept running {self.interrupt_grace_s:g} s after it was "
                            "interrupted, so the sandbox was stopped; its variables are lost"
                        )
                        raise KernelDiedError(self._dead_reason)
            except anyio.get_cancelled_exc_class():
                cell.interrupt()
                raise
            error = timeout_error(cell_timeout_s) if timed_out else cell.error
            return ExecResult(
                stdout="".join(cell.stdout),
                result=cell.result,
                error=error,
                duration_s=time.perf_counter() - started,
                timed_out=timed_out,
                state=self._state(),
            )

    def _run(self, cell: _Cell) -> None:
        cell.thread_id = threading.get_ident()
        self._out.lines = cell.stdout
        try:
            body, last = _split_last_expression(cell.code)
            exec(compile(body, "<cell>", "exec"), self._namespace)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), self._namespace)
                if value is not None:
                    cell.result = repr(value)
        except KeyboardInterrupt:
            cell.error = CellError("KeyboardInterrupt", "", "KeyboardInterrupt")
        except BaseException as exc:  # everything a cell raises is its output, not ours
            # Leave out the fake's own frame, as the kernel shows only the cell's.
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            frames = traceback.format_exception(type(exc), exc, tb)
            cell.error = CellError(type(exc).__name__, str(exc), "".join(frames))
        finally:
            try:
                self._after_cell(cell)
            finally:
                self._out.lines = None
                cell.done.set()

    def _print(
        self, *values: object, sep: str | None = " ", end: str | None = "\n", **_: Any
    ) -> None:
        lines: list[str] | None = getattr(self._out, "lines", None)
        text = (" " if sep is None else sep).join(str(v) for v in values)
        text += "\n" if end is None else end
        if lines is not None:
            lines.append(text)

    def _after_cell(self, cell: _Cell) -> None:
        """What the runtime's post-run hook does (its own code): restore, normalise, explain."""
        restored, notes = _runtime("namespace").restore(self._namespace, self._value, self._helpers)
        self._restored = restored
        cell.stdout.extend(f"[rlm] {note}\n" for note in notes)

    def _state(self) -> KernelState:
        answer = self._namespace.get("answer")
        payload = dict(answer) if isinstance(answer, dict) else {}
        return KernelState.parse(
            {
                "answer_content": payload.get("content", ""),
                "answer_ready": payload.get("ready"),
                "context_restored": self._restored,
            }
        )

    # --- the helpers the kernel provides --------------------------------------------------

    def _make_helpers(self) -> dict[str, Any]:
        # The runtime's own helper code, its sub-calls answered by the handler in-process.
        bridge = SimpleNamespace(llm_batch=self._llm_batch, rlm_query=self._rlm_query)
        return {
            **_runtime("namespace").answer_helpers(
                lambda: self._namespace, lambda: {"__name__", "__builtins__", *self._helpers}
            ),
            "llm_query": self._llm_query,
            "llm_batch": self._llm_batch,
            "rlm_query": self._rlm_query,
            **_runtime("helpers").make_helpers(lambda: self._value, bridge),
        }

    def _call(self, name: str, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        # Runs in the cell's thread: hop to the event loop, and turn the orchestrator's errors
        # into the exceptions the runtime's bridge client raises in the kernel.
        if self._token is None:
            raise BridgeCallError("the bridge is not available in this sandbox")
        try:
            with self._waits.busy():
                return anyio.from_thread.run(func, *args, token=self._token)
        except BudgetExceededError as exc:
            raise BudgetExhausted(str(exc)) from None
        except RLMError as exc:
            kind = getattr(exc, "kind", type(exc).__name__)
            raise BridgeCallError(f"{name} failed ({kind}): {exc}") from None

    def _bridge(self) -> BridgeHandler:
        if self._handler is None:
            raise BridgeCallError("the bridge is not available in this sandbox")
        return self._handler

    def _llm_query(self, prompt: str, model: str | None = None) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"llm_query: prompt must be a str, not {type(prompt).__name__}")
        return str(self._call("llm_query", self._bridge().llm_query, prompt, model))

    def _llm_batch(self, prompts: list[str], model: str | None = None) -> list[str]:
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("llm_batch takes a list of prompt strings; for one use llm_query")
        if not prompts:
            return []
        return list(self._call("llm_batch", answer_batch, self._bridge(), list(prompts), model))

    def _rlm_query(self, prompt: str, context: Any = None) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query: prompt must be a str, not {type(prompt).__name__}")
        handler = self._bridge()
        assert self._run_dir is not None
        with _child_context(self._run_dir, context) as path:
            return str(self._call("rlm_query", handler.rlm_query, prompt, path))


@contextmanager
def _child_context(run_dir: Path, context: Any) -> Iterator[Path | None]:
    """Write a child context the way the runtime does (a .txt or .json file) for the call."""
    if context is None:
        yield None
        return
    folder = run_dir / "children" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield rundir.stage_context(context, folder).host_path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Cell:
    """One cell's code, outcome and thread."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.stdout: list[str] = []
        self.result: str | None = None
        self.error: CellError | None = None
        self.done = threading.Event()
        self.thread_id: int | None = None

    async def wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.done.is_set():
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(_POLL_S)
        return True

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the cell's thread (what SIGINT does in the kernel)."""
        if self.thread_id is not None and not self.done.is_set():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(KeyboardInterrupt)
            )


def _split_last_expression(code: str) -> tuple[ast.Module, ast.Expression | None]:
    """Split a cell like IPython does: the last statement's value is the cell's result."""
    tree = ast.parse(code, "<cell>", "exec")
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        assert isinstance(last, ast.Expr)
        return tree, ast.Expression(last.value)
    return tree, None


class FakeBackend:
    """A :class:`~engine.sandbox.protocol.SandboxBackend` of :class:`FakeSandbox` instances."""

    def __init__(self, *, interrupt_grace_s: float = 2.0) -> None:
        self.interrupt_grace_s = interrupt_grace_s
        #: Task ids of every sandbox opened, in order (children included).
        self.opened: list[str] = []

    @asynccontextmanager
    async def open(
        self,
        *,
        context: Any,
        task_id: str,
        depth: int,
        handler: BridgeHandler,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[FakeSandbox]:
        """A fake sandbox for one task; ``env`` is ignored (no host tools in the fake)."""
        self.opened.append(task_id)
        sandbox = FakeSandbox(
            context, handler=handler, task_id=task_id, interrupt_grace_s=self.interrupt_grace_s
        )
        async with sandbox:
            yield sandbox
