"""``rlm mcp`` as a real MCP server process, driven by the official ``mcp`` client over stdio:
``rlm_run`` answers a query about a file through a real sandbox and a replayed model, with
progress notifications on the way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from engine.models import Cassette, ReplayServer

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
TOOL = "tests.test_tools_python:lookup"


def _text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def _server(replay_url: str, tmp_path: Path, *extra: str) -> StdioServerParameters:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RLM_TRAJECTORY_DIR": str(tmp_path / "trajectories"),
    }
    argv = ["-m", "engine.cli.main", "mcp", "--model", "openai/root"]
    argv += ["--api-base", replay_url, "--max-iterations", "3", *extra]
    return StdioServerParameters(command=sys.executable, args=argv, env=env, cwd=str(tmp_path))


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_rlm_mcp_answers_a_query_about_a_file(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text(
        "".join(f"12:00:{i:02d} {'ERROR' if i % 7 == 0 else 'INFO'} x\n" for i in range(60))
    )
    script = (
        "n = sum('ERROR' in line for line in context.splitlines())\n"
        'FINAL(f\'{n} errors (team {lookup("alice")["team"]})\')'
    )
    entries = [{"match": {"model": "root"}, "response": {"content": f"```repl\n{script}\n```\n"}}]
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async with (
        ReplayServer(Cassette(entries)) as replay,
        Client(_server(replay.base_url, tmp_path, "--tool", TOOL)) as client,
    ):
        listing = await client.list_tools()
        (tool,) = listing.tools
        assert tool.name == "rlm_run"
        assert set(tool.input_schema["properties"]) == {"query", "context_path", "context", "model"}
        assert tool.input_schema["required"] == ["query"]
        result = await client.call_tool(
            "rlm_run",
            {"query": "How many ERROR lines?", "context_path": str(log)},
            progress_callback=on_progress,
        )
        missing = await client.call_tool(
            "rlm_run", {"query": "x", "context_path": str(tmp_path / "absent.log")}
        )
    assert not result.is_error
    text = _text(result)
    answer, summary = text.split("\n\n---\n")
    assert answer == "9 errors (team infra)"  # a host tool given to rlm mcp like to rlm run
    assert summary.startswith("turns: 1, sub-calls: 0, tokens: ")
    assert "answer: final" in summary
    trajectory = Path(summary.rsplit("trajectory: ", 1)[1])
    assert trajectory.parent == tmp_path / "trajectories" and trajectory.is_file()
    messages = [m for _, _, m in reports]
    assert messages[0] == "sandbox ready" and messages[-1] == "done (answer)"
    assert (1, 3, "turn 1/3") in reports and (1, 3, "tool lookup ok") in reports
    assert missing.is_error
    assert "does not exist on the rlm server's machine" in _text(missing)


def test_rlm_mcp_http_default_port_leaves_the_local_model_its_port() -> None:
    # `rlm mcp --http` without --model serves MCP and starts the embedded model's server: on
    # one port, every rlm_run failed with "port 8765 ... is in use by something that is not
    # a healthy local model server".
    from engine.cli.main import build_parser
    from engine.local.serve import DEFAULT_PORT

    args = build_parser().parse_args(["mcp", "--http"])
    assert args.port != DEFAULT_PORT


def test_rlm_mcp_refuses_bad_settings_at_start(tmp_path: Path) -> None:
    params = _server("http://127.0.0.1:9/v1", tmp_path, "--tool", "not-a-reference")
    done = subprocess.run(
        [params.command, *params.args],
        env=params.env,
        cwd=params.cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "must be written MODULE:FUNCTION" in done.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_rlm_mcp_over_streamable_http_with_inline_context(tmp_path: Path) -> None:
    script = "FINAL(context.split()[-1])"
    entries = [{"match": {"model": "root"}, "response": {"content": f"```repl\n{script}\n```\n"}}]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ReplayServer(Cassette(entries)) as replay:
        params = _server(replay.base_url, tmp_path, "--http", "--port", str(port))
        process = await anyio.open_process(
            [params.command, *params.args], env=params.env, cwd=params.cwd
        )
        try:
            with anyio.fail_after(60):
                while True:
                    try:
                        await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.1)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                result = await client.call_tool(
                    "rlm_run", {"query": "Last word?", "context": "alpha beta gamma"}
                )
        finally:
            process.terminate()
            await process.wait()
    assert not result.is_error, result
    assert _text(result).startswith("gamma\n\n---\nturns: 1, ")
