"""Parsing the tool settings: ``--tool``/``[[tools]]`` and ``--mcp``/``[[mcp]]``.

Each accepts what its source gives: a list of strings from flags, a list of tables from TOML,
and one string from the environment (``RLM_TOOL_FUNCTIONS="a:f,b:g"``,
``RLM_MCP_SERVERS="cmd one;https://host/mcp"``).
"""

from __future__ import annotations

from typing import Any

from engine.tools.mcp_tools import McpServerConfig
from engine.tools.registry import FunctionTool


def parse_functions(value: Any) -> tuple[FunctionTool, ...]:
    """``["mod:fn", ...]``, ``[{function = "mod:fn", name = "x"}, ...]`` or ``"mod:fn,..."``."""
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError('expected [[tools]] tables like function = "module:function"')
    tools = []
    for item in value:
        if isinstance(item, FunctionTool):
            tools.append(item)
        elif isinstance(item, str):
            tools.append(FunctionTool(item))
        elif isinstance(item, dict):
            unknown = set(item) - {"function", "name"}
            if unknown or not isinstance(item.get("function"), str):
                raise ValueError(
                    'each [[tools]] table needs function = "module:function" (and optionally '
                    f'name = "..."); got keys {sorted(item)}'
                )
            name = item.get("name")
            if name is not None and not isinstance(name, str):
                raise ValueError("[[tools]] name must be a string")
            tools.append(FunctionTool(item["function"], name))
        else:
            raise ValueError(f"a tool must be 'module:function', not {item!r}")
    return tuple(tools)


def parse_mcp(value: Any) -> tuple[McpServerConfig, ...]:
    """``["cmd args", "https://..."]``, ``[{command = [...]}, {url = "..."}]`` or ``"a;b"``."""
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(";")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError('expected [[mcp]] tables like command = ["uvx", "server"] or url = "..."')
    servers = []
    for item in value:
        if isinstance(item, McpServerConfig):
            servers.append(item)
        elif isinstance(item, str):
            servers.append(McpServerConfig.parse(item))
        elif isinstance(item, dict):
            servers.append(_table(item))
        else:
            raise ValueError(f"an MCP server must be a command line or a URL, not {item!r}")
    return tuple(servers)


def _table(item: dict[str, Any]) -> McpServerConfig:
    unknown = set(item) - {"command", "url", "prefix", "env"}
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in [[mcp]]; use command, url, prefix, env"
        )
    command = item.get("command", [])
    if isinstance(command, str):
        # A command line as one string, split like --mcp's; prefix and env still apply.
        parsed = McpServerConfig.parse(command)
        if parsed.url is not None:
            raise ValueError('[[mcp]] command is a command line; give a URL as url = "..."')
        command = list(parsed.command)
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ValueError('[[mcp]] command must be a list of strings, e.g. ["uvx", "server"]')
    env = item.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError("[[mcp]] env must be a table of strings")
    url = item.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError("[[mcp]] url must be a string")
    prefix = item.get("prefix", "")
    if not isinstance(prefix, str):
        raise ValueError("[[mcp]] prefix must be a string")
    return McpServerConfig(tuple(command), url, prefix, tuple(sorted(env.items())))
