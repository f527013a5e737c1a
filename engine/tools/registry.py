"""The tool registry: loads Python tools, connects MCP servers, calls tools with a timeout.

One :class:`ToolRegistry` is owned by an :class:`engine.Engine` for its lifetime (MCP server
processes and connections are opened on enter and closed on exit); :meth:`restrict` gives a
view with fewer tools (a service job may narrow the operator's tools, never add any).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from engine.errors import ConfigError, ToolError, ToolTimeoutError
from engine.lifecycle import AsyncResource
from engine.log import get_logger
from engine.tools.mcp_tools import McpServerConfig, connect
from engine.tools.python_tools import load_python_tool
from engine.tools.spec import ToolSpec, check_names

log = get_logger(__name__)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RESULT_CHARS = 1_000_000


@dataclass(frozen=True)
class FunctionTool:
    """``[[tools]] function = "module:function"`` with an optional ``name``."""

    function: str
    name: str | None = None


@dataclass(frozen=True)
class ToolsConfig:
    """The tools of an engine: Python functions and MCP servers, with per-call limits."""

    functions: tuple[FunctionTool, ...] = ()
    mcp: tuple[McpServerConfig, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ConfigError(f"tool_timeout must be greater than 0 (got {self.timeout_s})")
        if self.max_result_chars < 1:
            raise ConfigError("the tool result limit must be at least 1 character")

    def __bool__(self) -> bool:
        return bool(self.functions or self.mcp)


class _Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    async def call(
        self, args: list[Any], kwargs: dict[str, Any], tenant: str | None = None
    ) -> Any: ...


class ToolRegistry(AsyncResource):
    """The tools available to runs; an async context manager.

    :meth:`call` runs one tool with the timeout, checks the result is JSON-able and not
    larger than the limit, and turns every failure into :class:`ToolError`. ``tenant`` (set
    by :meth:`for_tenant`) is who the calls count against where tools share the process
    (:data:`engine.tools.python_tools.MAX_RUNNING_PER_TENANT`).
    """

    def __init__(self, config: ToolsConfig) -> None:
        self.config = config
        self.tenant: str | None = None
        self._tools: dict[str, _Tool] = {}

    @classmethod
    def _view(cls, parent: ToolRegistry, tools: dict[str, _Tool]) -> ToolRegistry:
        view = cls(parent.config)
        view.tenant = parent.tenant
        view._tools = tools
        return view

    def for_tenant(self, tenant: str | None) -> ToolRegistry:
        """A view of the same tools whose calls count against ``tenant`` (a service key)."""
        view = self._view(self, self._tools)
        view.tenant = tenant
        return view

    async def _open(self, stack: AsyncExitStack) -> None:
        tools: list[_Tool] = [load_python_tool(f.function, f.name) for f in self.config.functions]
        for server in self.config.mcp:
            tools.extend(await connect(stack, server))
        check_names([t.spec for t in tools])
        self._tools = {t.spec.name: t for t in tools}

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools, in registration order."""
        return tuple(t.spec for t in self._tools.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def restrict(self, names: Iterable[str] | None) -> ToolRegistry:
        """A view with only ``names`` (None: all); an unknown name is a :class:`ConfigError`."""
        if names is None:
            return self
        wanted = list(names)
        unknown = [n for n in wanted if n not in self._tools]
        if unknown:
            raise ConfigError(
                f"unknown tool {unknown[0]!r}; the configured tools are: "
                + (", ".join(self._tools) or "none")
            )
        return self._view(self, {n: self._tools[n] for n in wanted})

    def spec(self, name: str) -> ToolSpec:
        return self._get(name).spec

    def _get(self, name: str) -> _Tool:
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join(self._tools) or "none"
            raise ToolError(f"there is no tool {name!r}; available tools: {available}", "NameError")
        return tool

    async def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run tool ``name``; return its JSON-able result or raise :class:`ToolError`."""
        tool = self._get(name)
        timeout = self.config.timeout_s
        try:
            with anyio.fail_after(timeout):
                result = await tool.call(args, kwargs, self.tenant)
        except TimeoutError:
            raise ToolTimeoutError(
                f"{name} did not finish within {timeout:g} s (the tool timeout, "
                "--tool-timeout); call it with less work or do without it",
                "TimeoutError",
            ) from None
        except ToolError:
            raise
        except Exception as exc:
            log.info("tool raised", tool=name, error=repr(exc))
            raise ToolError(f"{name}: {type(exc).__name__}: {exc}", type(exc).__name__) from exc
        return self._checked(name, result)

    def _checked(self, name: str, result: Any) -> Any:
        try:
            text = json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ToolError(
                f"{name} returned a {type(result).__name__} that is not JSON-able ({exc}); "
                "the tool must return str, numbers, bools, None, lists or dicts",
                "TypeError",
            ) from None
        if len(text) > self.config.max_result_chars:
            raise ToolError(
                f"{name} returned {len(text):,} characters of JSON, more than the limit of "
                f"{self.config.max_result_chars:,}; ask it for less",
                "ValueError",
            )
        # The round trip gives the kernel exactly what JSON carries (tuples become lists).
        return json.loads(text)

    def prompt_section(self) -> str:
        """The system-prompt paragraph listing each tool's signature and description."""
        if not self._tools:
            return ""
        lines = [
            "Tools (host functions callable from your code like any function; they return "
            "Python values and raise an exception with the tool's message on failure):"
        ]
        for spec in self.specs:
            first = spec.description.strip().split("\n\n", 1)[0].replace("\n", " ")
            lines.append(f"- `{spec.signature()}`" + (f": {first}" if first else ""))
        return "\n".join(lines)

    def kernel_json(self) -> str:
        """The tool list for the kernel (``RLM_TOOLS``), without host details."""
        return json.dumps([spec.kernel_json() for spec in self.specs], ensure_ascii=False)


class ToolBudget:
    """Counts tool calls of one run tree against ``limit`` (None: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self) -> None:
        """Count one call, or raise :class:`BudgetExceededError` once the limit is reached."""
        from engine.errors import BudgetExceededError

        if self.limit is not None and self.used >= self.limit:
            raise BudgetExceededError(
                "max_tool_calls",
                f"tool-call budget of {self.limit} calls used up (--max-tool-calls); "
                "finish with what you have",
            )
        self.used += 1
