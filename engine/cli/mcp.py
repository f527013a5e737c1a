"""``rlm mcp``: the RLM as an MCP server, so coding agents can hand it what they cannot read.

One tool, ``rlm_run(query, context_path=None, context=None, model=None)``, runs one job with
the settings of ``rlm run`` (the same flags, environment and TOML) and returns the answer
plus a short summary; each turn, sub-call and tool call goes out as an MCP progress
notification. Served over stdio (the default, what Claude Code and most clients launch) or
streamable HTTP (``--http``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import anyio

from engine.config import EngineConfig, load_config
from engine.settings import flag_values

#: ``--http``'s default port. Not the embedded local model's (8765): ``rlm mcp --http``
#: without ``--model`` starts that server on its port, which must then be free.
DEFAULT_HTTP_PORT = 8766


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mcp`` sub-command."""
    from engine.cli.run import add_engine_arguments

    parser = subparsers.add_parser(
        "mcp",
        help="serve the RLM as an MCP tool (rlm_run) over stdio or streamable HTTP",
        description=(
            "Serve MCP with one tool, rlm_run(query, context_path=None, context=None, "
            "model=None), that runs one job with these settings (the same as rlm run). "
            "Stdio by default: add it to Claude Code with `claude mcp add rlm -- rlm mcp "
            "--model openai/gpt-4o-mini`."
        ),
    )
    add_engine_arguments(parser)
    http = parser.add_argument_group("streamable HTTP")
    http.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    http.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    http.add_argument(
        "--port", type=int, default=DEFAULT_HTTP_PORT, help=f"default {DEFAULT_HTTP_PORT}"
    )
    http.add_argument("--path", default="/mcp", help="endpoint path (default /mcp)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Serve until stdin closes (stdio) or the process is interrupted (HTTP)."""
    flags = flag_values(args)

    def configure(model: str | None) -> EngineConfig:
        chosen = flags if model is None else {**flags, "model": model}
        return load_config(chosen, config_file=args.config)

    configure(None)  # a bad setting fails now, not at the first call
    anyio.run(_serve, args, configure)
    return 0


async def _serve(args: argparse.Namespace, configure: Callable[[str | None], EngineConfig]) -> None:
    from engine.cli.mcp_app import build_server
    from engine.tools import ToolRegistry

    # The tools (MCP servers included) start once, here, and every call borrows them; a bad
    # tool fails now rather than at the first call.
    async with ToolRegistry(configure(None).tools) as tools:
        server = build_server(configure, tools)
        if args.http:
            import uvicorn

            app = server.streamable_http_app(streamable_http_path=args.path, host=args.host)
            config = uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
            await uvicorn.Server(config).serve()
        else:
            await server.run_stdio_async()
