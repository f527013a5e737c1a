"""MCP servers as tools in the kernel: a small MCP server (the SDK's MCPServer, the v2 name of
FastMCP) written here, reached over stdio and streamable HTTP by the official ``mcp`` client,
called from real sandboxes with a replayed root model.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from engine import Engine, EngineConfig, Limits, RunResult
from engine.errors import ConfigError
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm.trajectory import read_trajectory
from engine.tools import McpServerConfig, ToolRegistry, ToolsConfig
from engine.tools.settings import parse_mcp

pytestmark = pytest.mark.anyio

SERVER = textwrap.dedent(
    '''
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    app = MCPServer("calc")

    @app.tool()
    def add(a: int, b: int = 1) -> int:
        """Add two integers."""
        return a + b

    @app.tool(name="user-info")
    def user_info(name: str) -> dict:
        """A user's record."""
        return {"name": name, "groups": ["dev", "ops"]}

    @app.tool()
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        if b == 0:
            raise ToolError("cannot divide by zero")
        return a / b

    if __name__ == "__main__":
        app.run()
    '''
)


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    path = tmp_path / "calc_server.py"
    path.write_text(SERVER)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http_url(server_script: Path) -> AsyncIterator[str]:
    """The same server over streamable HTTP, served in this process by uvicorn."""
    namespace: dict[str, Any] = {"__name__": "calc_server"}
    exec(compile(server_script.read_text(), str(server_script), "exec"), namespace)
    port = _free_port()
    app = namespace["app"].streamable_http_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
        server.should_exit = True


async def _run(tmp_path: Path, tools: ToolsConfig, script: str) -> tuple[RunResult, list[Any]]:
    entries = [
        {"match": {"model": "root"}, "response": {"content": f"Go.\n```repl\n{script}\n```\n"}}
    ]
    trajectory = tmp_path / "t.jsonl"
    async with ReplayServer(Cassette(entries)) as replay:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=replay.base_url, api_key="x"),
            limits=Limits(max_iterations=1),
            trajectory_path=trajectory,
            tools=tools,
        )
        async with Engine(config) as engine:
            result = await engine.run("Use the MCP tools.")
            system = replay.requests[0]["messages"][0]["content"]
    return result, [system, *read_trajectory(trajectory)]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_mcp_stdio_tools_in_the_kernel(tmp_path: Path, server_script: Path) -> None:
    script = (
        "print(add(a=2, b=3), add(a=4))\n"
        "print(user_info(name='ann'))\n"
        "try:\n    divide(a=1, b=0)\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, '|', exc)\n"
        "try:\n    add(2, 3)\nexcept TypeError as exc:\n    print('TypeError |', exc)\n"
        "FINAL(divide(a=9, b=3))"
    )
    server = McpServerConfig(command=(sys.executable, str(server_script)))
    result, (system, *events) = await _run(tmp_path, ToolsConfig(mcp=(server,)), script)
    assert (result.answer, result.ready) == ("3.0", True)
    output = next(e for e in events if e["type"] == "cell")["output"]
    assert "5 5" in output
    assert "{'name': 'ann', 'groups': ['dev', 'ops']}" in output
    assert "ToolError | divide: Error executing tool divide: cannot divide by zero" in output
    assert "TypeError | add(*, a, b=1): too many positional arguments" in output
    assert "`add(*, a: int, b: int = 1)`: Add two integers." in system
    assert "`user_info(*, name: str)`: A user's record." in system
    calls = [(e["name"], e["status"]) for e in events if e["type"] == "tool_call"]
    assert calls == [
        ("add", "ok"),
        ("add", "ok"),
        ("user_info", "ok"),
        ("divide", "error"),
        ("divide", "ok"),
    ]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_mcp_streamable_http_tools(tmp_path: Path, http_url: str) -> None:
    (server,) = parse_mcp([http_url])
    assert server.url == http_url
    result, _ = await _run(tmp_path, ToolsConfig(mcp=(server,)), "FINAL(add(a=40, b=2))")
    assert (result.answer, result.ready) == ("42", True)


async def test_mcp_prefix_and_clashes(server_script: Path) -> None:
    command = (sys.executable, str(server_script))
    prefixed = ToolsConfig(mcp=(McpServerConfig(command=command, prefix="calc_"),))
    async with ToolRegistry(prefixed) as registry:
        assert registry.names == ("calc_add", "calc_user_info", "calc_divide")
        assert await registry.call("calc_add", [], {"a": 1, "b": 2}) == 3
    twice = ToolsConfig(mcp=(McpServerConfig(command=command),) * 2)
    with pytest.raises(ConfigError, match="two tools are called 'add'"):
        async with ToolRegistry(twice):
            pass


async def test_mcp_server_that_does_not_start_is_a_clear_error(tmp_path: Path) -> None:
    missing = McpServerConfig(command=(sys.executable, str(tmp_path / "nope.py")))
    with pytest.raises(ConfigError, match="cannot start or reach MCP server"):
        async with ToolRegistry(ToolsConfig(mcp=(missing,))):
            pass


def test_mcp_settings_parse() -> None:
    servers = parse_mcp(
        [
            "uvx mcp-server-time --local-timezone 'Europe/Paris'",
            {"command": ["node", "srv.js"], "prefix": "n_", "env": {"TOKEN": "t"}},
            {"url": "https://example.org/mcp"},
        ]
    )
    assert servers[0].command == ("uvx", "mcp-server-time", "--local-timezone", "Europe/Paris")
    assert (servers[1].prefix, servers[1].env) == ("n_", (("TOKEN", "t"),))
    assert servers[2].url == "https://example.org/mcp"
    # A command given as one line keeps its table's prefix and env (they were dropped).
    (line,) = parse_mcp([{"command": "node 'my srv.js'", "prefix": "s_", "env": {"T": "1"}}])
    assert (line.command, line.prefix, line.env) == (("node", "my srv.js"), "s_", (("T", "1"),))
    with pytest.raises(ValueError, match="give a URL as url"):
        parse_mcp([{"command": "https://example.org/mcp"}])
    with pytest.raises(ConfigError, match="either command"):
        parse_mcp([{"command": ["x"], "url": "http://y"}])
    with pytest.raises(ValueError, match="unknown keys"):
        parse_mcp([{"cmd": ["x"]}])
