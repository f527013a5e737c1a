"""The MCP server behind ``rlm mcp``: the ``rlm_run`` tool and its progress notifications.

Kept apart from :mod:`engine.cli.mcp` so the ``rlm`` command only imports the MCP SDK when
it serves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from engine.config import EngineConfig
from engine.errors import ConfigError, ContextError, RLMError
from engine.log import get_logger
from engine.tools import ToolRegistry

log = get_logger(__name__)

TOOL_DESCRIPTION = (
    "Answer a question about a file, a directory or a text too large to read, with a "
    "Recursive Language Model: a model that writes Python in a sandbox where the context is "
    "loaded, and calls sub-models on the pieces it selects. Give context_path (a file or "
    "directory on the server's machine) or context (the text itself), or neither. Returns "
    "the answer, then a summary (turns, sub-calls, tokens, cost, trajectory file)."
)


def build_server(
    configure: Callable[[str | None], EngineConfig], tools: ToolRegistry | None = None
) -> MCPServer:
    """The MCP server; ``configure(model)`` gives the engine settings of one call.

    ``tools``, an open registry, is lent to every call (else each call opens its own).
    """
    server = MCPServer(
        "rlm",
        instructions="Use rlm_run to answer questions about files or texts too large to read.",
    )

    @server.tool(name="rlm_run", description=TOOL_DESCRIPTION)
    async def rlm_run(
        query: str,
        ctx: Context,  # injected by the SDK, not a tool argument
        context_path: str | None = None,
        context: str | None = None,
        model: str | None = None,
    ) -> str:
        try:
            return await run_job(configure, query, context_path, context, model, ctx, tools)
        except RLMError as exc:
            raise ToolError(str(exc)) from exc

    return server


async def run_job(
    configure: Callable[[str | None], EngineConfig],
    query: str,
    context_path: str | None,
    context: str | None,
    model: str | None,
    ctx: Any,
    tools: ToolRegistry | None = None,
) -> str:
    """Run one job; return the answer and its summary (raise RLMError on failure)."""
    from engine.rlm import Engine

    if context_path is not None and context is not None:
        raise ConfigError("give context_path or context, not both")
    value: Path | str | None = context
    if context_path is not None:
        value = Path(context_path).expanduser()
        if not value.exists():
            raise ContextError(
                f"context_path {value} does not exist on the rlm server's machine; give an "
                "absolute path"
            )
    config = configure(model)
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

    def on_event(event: dict[str, Any]) -> None:
        send.send_nowait(event)

    async with Engine(config, tools=tools) as engine, anyio.create_task_group() as group:
        group.start_soon(_forward_progress, receive, ctx, config.limits.max_iterations)
        try:
            result = await engine.run(query, value, on_event)
        finally:
            send.close()
    if result.stop_reason == "error":
        raise RLMError(f"the run failed: {result.error} (trajectory: {result.trajectory_path})")
    usage = result.usage_total
    status = "final" if result.ready else f"stopped at {result.stop_reason}, not final"
    summary = (
        f"turns: {result.iterations}, sub-calls: {result.sub_calls}, "
        f"tokens: {usage.total_tokens:,}, cost: ${usage.cost_usd:.4f}, answer: {status}, "
        f"trajectory: {result.trajectory_path}"
    )
    return f"{result.answer}\n\n---\n{summary}"


async def _forward_progress(receive: Any, ctx: Any, max_turns: int) -> None:
    """Turn trajectory events into MCP progress notifications (turns of the top run)."""
    turn = 0
    async with receive:
        async for event in receive:
            kind = event["type"]
            top = event.get("depth", 1) == 1
            if kind == "turn" and top:
                turn = event["iteration"]
                message = f"turn {turn}/{max_turns}"
            elif kind == "sub_call":
                message = f"sub-call ({event.get('kind')}) {event.get('status')}"
            elif kind == "tool_call":
                message = f"tool {event.get('name')} {event.get('status')}"
            elif kind == "sandbox_ready" and top:
                message = "sandbox ready"
            elif kind == "run_end" and top:
                message = f"done ({event.get('stop_reason')})"
            else:
                continue
            try:
                await ctx.report_progress(turn, max_turns, message)
            except Exception as exc:  # a client that went away must not end the run
                log.debug("progress not sent", error=repr(exc))
