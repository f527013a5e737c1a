"""Python functions of the host as tools: ``module:function`` loaded with importlib.

The signature and docstring come from :mod:`inspect`, so the kernel stub has the same
parameters and the prompt shows the function's own description. Coroutine functions are
awaited; plain functions run in a worker thread so a slow tool never blocks the event loop.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from engine.errors import ConfigError, ToolError
from engine.tools.spec import DESCRIPTION_CHARS, ToolParam, ToolSpec, json_type


@dataclass(frozen=True)
class PythonTool:
    """A loaded Python tool: its spec and the function itself."""

    spec: ToolSpec
    function: Callable[..., Any]
    signature: inspect.Signature

    async def call(self, args: list[Any], kwargs: dict[str, Any], tenant: str | None = None) -> Any:
        """Call the function with ``args``/``kwargs`` as the sandbox passed them; ``tenant``
        (a service key's owner) is who the call's thread counts against."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolError(f"{self.spec.name}(): {exc}", "TypeError") from None
        call = functools.partial(self.function, *args, **kwargs)
        if inspect.iscoroutinefunction(self.function):
            return await call()
        slot = _threads.reserve(self.spec.name, tenant)
        try:
            # abandon_on_cancel: at the timeout the caller gets its answer; the thread cannot
            # be killed and finishes in the background, counted until it does.
            result = await anyio.to_thread.run_sync(slot.wrap(call), abandon_on_cancel=True)
        finally:
            slot.drop_unstarted()
        if inspect.isawaitable(result):
            return await result
        return result


#: Python tool calls (threads of this process) that may run at once, those past their
#: deadline included: sandbox code calling a tool that hangs on some input, again and again,
#: would otherwise add a stuck thread per call until the host runs out of threads.
MAX_RUNNING_CALLS = 32
#: Of those, what one tenant (a service key) may hold: the threads are the process's, shared
#: by every key's jobs, and one key's code hanging a tool 32 times refused every other key's
#: Python tool calls for as long as the tool hung.
MAX_RUNNING_PER_TENANT = 8


class _Slot:
    """One admitted call: counted from admission until its thread returns, or until the
    caller gives up before a thread started it (then the thread, if one comes, does nothing)."""

    def __init__(self, owner: _RunningThreads, tenant: str | None) -> None:
        self._owner = owner
        self._tenant = tenant
        self._started = False
        self._released = False

    def wrap(self, call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with self._owner.lock:
                if self._released:
                    return None  # the caller left before this thread started: nobody waits
                self._started = True
            try:
                return call()
            finally:
                with self._owner.lock:
                    self._release()

        return run

    def drop_unstarted(self) -> None:
        with self._owner.lock:
            if not self._started:
                self._release()

    def _release(self) -> None:
        """Uncount the call once (the owner's lock is held)."""
        if self._released:
            return
        self._released = True
        self._owner.running -= 1
        left = self._owner.by_tenant[self._tenant] - 1
        if left:
            self._owner.by_tenant[self._tenant] = left
        else:
            del self._owner.by_tenant[self._tenant]


class _RunningThreads:
    """How many Python tool calls are admitted and not yet returned (of every run), in all
    and per tenant."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.by_tenant: dict[str | None, int] = {}

    def reserve(self, name: str, tenant: str | None) -> _Slot:
        """Admit one call, or raise :class:`ToolError` saying which limit is reached."""
        with self.lock:
            mine = self.by_tenant.get(tenant, 0)
            if self.running >= MAX_RUNNING_CALLS:
                raise ToolError(
                    f"{name}: {self.running} calls of the engine's Python tools are still "
                    "running, past their deadline (a thread cannot be stopped, so a tool that "
                    "hangs keeps its thread); try later, or do without this tool",
                    "RuntimeError",
                )
            if tenant is not None and mine >= MAX_RUNNING_PER_TENANT:
                raise ToolError(
                    f"{name}: {mine} of your calls of the engine's Python tools are still "
                    f"running (at most {MAX_RUNNING_PER_TENANT} per API key; a tool that hangs "
                    "keeps its thread past the deadline); wait for them, or do without this tool",
                    "RuntimeError",
                )
            self.running += 1
            self.by_tenant[tenant] = mine + 1
        return _Slot(self, tenant)


_threads = _RunningThreads()


def load_python_tool(ref: str, name: str | None = None) -> PythonTool:
    """Import ``module:function`` (``function`` may be dotted, e.g. ``module:Class.method``)."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigError(
            f"tool {ref!r} must be written MODULE:FUNCTION, e.g. mypkg.lookups:find_user"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"tool {ref}: cannot import module {module_name!r} ({exc}); install it or put its "
            "folder on PYTHONPATH"
        ) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"tool {ref}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise ConfigError(f"tool {ref}: {attr_path!r} is a {type(target).__name__}, not callable")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {ref}: cannot read its signature ({exc})") from exc
    tool_name = name or attr_path.rsplit(".", 1)[-1]
    params = tuple(_param(p) for p in signature.parameters.values())
    returns = None
    if signature.return_annotation is not inspect.Signature.empty:
        returns = _annotation_text(signature.return_annotation)
    description = (inspect.getdoc(target) or "").strip()[:DESCRIPTION_CHARS]
    spec = ToolSpec(
        name=tool_name,
        description=description,
        params=params,
        origin=ref,
        call_name=attr_path,
        returns=returns,
        input_schema=_input_schema(params),
    )
    return PythonTool(spec, target, signature)


def _param(param: inspect.Parameter) -> ToolParam:
    default = None
    if param.default is not inspect.Parameter.empty:
        default = repr(param.default)
    annotation = None
    if param.annotation is not inspect.Parameter.empty:
        annotation = _annotation_text(param.annotation)
    return ToolParam(param.name, param.kind.name, default, annotation)  # type: ignore[arg-type]


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    return inspect.formatannotation(annotation)


def _input_schema(params: tuple[ToolParam, ...]) -> dict[str, Any]:
    """A JSON schema of the keyword-callable parameters (function calling passes keywords)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in params:
        if param.kind not in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"):
            continue
        kind = json_type(param.annotation)
        properties[param.name] = {"type": kind} if kind else {}
        if param.default is None:
            required.append(param.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema
