"""MCP servers as tool sources, through the official ``mcp`` SDK.

A server is started over stdio (a command) or reached over streamable HTTP (a URL); its
tools are listed once at start. In the kernel each tool is a function of keyword arguments
named after the tool; results come back as Python values: the structured result when the
server sends one, else the text (parsed when it is a JSON object or list).
"""

from __future__ import annotations

import json
import shlex
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError, ToolError
from engine.log import get_logger
from engine.tools.spec import DESCRIPTION_CHARS, ToolParam, ToolSpec, python_annotation, python_name

log = get_logger(__name__)


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server: ``command`` (argv, stdio) or ``url`` (streamable HTTP).

    ``prefix`` is put before each of its tool names (to avoid clashes); ``env`` adds
    environment variables for a stdio server.
    """

    command: tuple[str, ...] = ()
    url: str | None = None
    prefix: str = ""
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                'an MCP server needs either command = [...] (stdio) or url = "..." '
                "(streamable HTTP), not both or neither"
            )

    @classmethod
    def parse(cls, text: str) -> McpServerConfig:
        """``--mcp`` value: a URL (http/https) or a command line split like a shell."""
        text = text.strip()
        if text.startswith(("http://", "https://")):
            return cls(url=text)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ConfigError(f"--mcp {text!r}: cannot split the command ({exc})") from None
        if not argv:
            raise ConfigError("--mcp needs a command (e.g. --mcp 'uvx mcp-server-time') or a URL")
        return cls(command=tuple(argv))

    @property
    def label(self) -> str:
        return self.url or shlex.join(self.command)


@dataclass
class McpTool:
    """One tool of a connected MCP server."""

    spec: ToolSpec
    client: Any  # mcp.Client
    output_wrapped: bool

    async def call(self, args: list[Any], kwargs: dict[str, Any], tenant: str | None = None) -> Any:
        # ``tenant`` is not counted here: the call runs in the MCP server, not a thread of ours.
        if args:
            raise ToolError(
                f"{self.spec.name}() takes keyword arguments only (MCP tool), e.g. "
                f"{self.spec.name}(name=value)",
                "TypeError",
            )
        result = await self.client.call_tool(self.spec.call_name, kwargs)
        if result.is_error:
            raise ToolError(f"{self.spec.name}: {_text(result.content) or 'the tool failed'}")
        return convert_result(result, self.output_wrapped)


async def connect(stack: AsyncExitStack, server: McpServerConfig) -> list[McpTool]:
    """Start or reach ``server`` (closed with ``stack``) and return its tools."""
    from mcp import Client, StdioServerParameters

    target: Any
    if server.url:
        target = server.url
    else:
        params: dict[str, Any] = {"command": server.command[0], "args": list(server.command[1:])}
        if server.env:
            from mcp.client.stdio import get_default_environment

            params["env"] = {**get_default_environment(), **dict(server.env)}
        target = StdioServerParameters(**params)
    try:
        client = await stack.enter_async_context(Client(target))
        listing = await client.list_tools()
    except Exception as exc:
        raise ConfigError(
            f"cannot start or reach MCP server {server.label!r}: {type(exc).__name__}: {exc}; "
            "run the command by hand to check it, or check the URL"
        ) from exc
    tools = []
    for tool in listing.tools:
        spec = _spec(tool, server)
        schema = tool.output_schema or {}
        wrapped = set((schema.get("properties") or {}).keys()) == {"result"}
        tools.append(McpTool(spec, client, wrapped))
    log.info("mcp server connected", server=server.label, tools=[t.spec.name for t in tools])
    return tools


def _spec(tool: Any, server: McpServerConfig) -> ToolSpec:
    schema: dict[str, Any] = dict(tool.input_schema or {})
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    params = []
    # Required first: a keyword-only signature has no ordering rule, but it reads better.
    for name in sorted(properties, key=lambda n: n not in required):
        prop = properties[name] if isinstance(properties[name], dict) else {}
        default = None
        if name not in required:
            default = repr(prop["default"]) if "default" in prop else "None"
        params.append(
            ToolParam(
                name,
                "KEYWORD_ONLY",
                default,
                python_annotation(prop),
                prop.get("description"),
            )
        )
    description = (tool.description or tool.title or "").strip()[:DESCRIPTION_CHARS]
    return ToolSpec(
        name=server.prefix + python_name(tool.name),
        description=description,
        params=tuple(params),
        origin=f"mcp {server.label}: {tool.name}",
        call_name=tool.name,
        input_schema=schema or {"type": "object", "properties": {}},
    )


def convert_result(result: Any, output_wrapped: bool) -> Any:
    """A ``CallToolResult`` as a Python value (structured content, JSON text or text)."""
    structured = result.structured_content
    if structured is not None:
        if output_wrapped and isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
    others = [
        _describe_block(block) for block in result.content if getattr(block, "type", "") != "text"
    ]
    values: list[Any] = [_maybe_json(text) for text in texts] + others
    if len(values) == 1:
        return values[0]
    return values or None


def _maybe_json(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):  # nested past the decoder's limit: keep the text
            return text
    return text


def _describe_block(block: Any) -> dict[str, Any]:
    # Images, audio and resources cannot go into the kernel as bytes usefully; say what came.
    kind = getattr(block, "type", "unknown")
    info: dict[str, Any] = {"type": kind}
    for attr in ("mime_type", "uri", "name"):
        value = getattr(block, attr, None)
        if value is not None:
            info[attr] = str(value)
    data = getattr(block, "data", None)
    if isinstance(data, str):
        info["base64_chars"] = len(data)
    return info


def _text(content: list[Any]) -> str:
    return "\n".join(block.text for block in content if getattr(block, "type", "") == "text")
