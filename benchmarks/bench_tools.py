"""Benchmark host tools: the cost of one tool call from sandbox code, and of MCP start-up.

    .venv/bin/python benchmarks/bench_tools.py [--calls 300]

A real sandbox and bridge, a replayed root model whose one cell times ``--calls`` calls of
(a) a host Python tool (sync, run in a worker thread), (b) an async one, and (c) a tool of an
MCP server over stdio (the SDK's MCPServer in its own process), each measured inside the
kernel with ``time.perf_counter``. Also the time to open the tool registry (import the Python
tools, start the MCP server and list its tools) and to close it. Prints numbers, asserts
nothing; ``--json`` writes them (default ``out/bench/tools.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402

MCP_SERVER = '''
from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
def echo_mcp(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    app.run()
'''


def echo_sync(text: str) -> str:
    """Return the text (a plain function: runs in a worker thread)."""
    return text


async def echo_async(text: str) -> str:
    """Return the text (a coroutine function: awaited on the event loop)."""
    return text


def _cell(calls: int) -> str:
    return f"""
import json, time
def timed(fn, **kw):
    out = []
    for _ in range({calls}):
        t = time.perf_counter(); fn(**kw); out.append(time.perf_counter() - t)
    return out
r = {{name: timed(fn, text="x" * 100) for name, fn in
     [("python_sync", echo_sync), ("python_async", echo_async), ("mcp_stdio", echo_mcp)]}}
FINAL(json.dumps(r))
"""


async def main(calls: int, out: Path) -> None:
    from engine import Engine, EngineConfig, Limits
    from engine.models import Cassette, ModelSpec, ReplayServer
    from engine.tools import FunctionTool, McpServerConfig, ToolRegistry, ToolsConfig

    with tempfile.TemporaryDirectory() as tmp:
        server = Path(tmp) / "bench_mcp.py"
        server.write_text(MCP_SERVER)
        tools = ToolsConfig(
            functions=(
                FunctionTool("benchmarks.bench_tools:echo_sync"),
                FunctionTool("benchmarks.bench_tools:echo_async"),
            ),
            mcp=(McpServerConfig(command=(sys.executable, str(server))),),
        )
        opens, closes = [], []
        for _ in range(3):
            started = time.perf_counter()
            registry = ToolRegistry(tools)
            await registry.__aenter__()
            opened = time.perf_counter()
            await registry.__aexit__(None, None, None)
            opens.append(opened - started)
            closes.append(time.perf_counter() - opened)
        reply = f"```repl\n{_cell(calls)}\n```\n"
        entries = [{"match": {"model": "root"}, "response": {"content": reply}}]
        async with ReplayServer(Cassette(entries)) as replay:
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=replay.base_url, api_key="x"),
                limits=Limits(max_iterations=1, cell_timeout_s=600),
                trajectory_path=Path(tmp) / "t.jsonl",
                tools=tools,
            )
            async with Engine(config) as engine:
                result = await engine.run("bench")
    if not result.ready:
        raise SystemExit(f"the benchmark cell failed: {result.stop_reason} {result.error}")
    timings = json.loads(result.answer)
    report: dict[str, object] = {
        "calls": calls,
        "registry_open_s": [round(x, 3) for x in opens],
        "registry_close_s": [round(x, 3) for x in closes],
    }
    print(f"tool registry with 2 Python tools + 1 MCP stdio server ({calls} calls per tool)")
    print(f"  open (import, start MCP server, list tools): {statistics.median(opens) * 1e3:.0f} ms")
    print(f"  close (stop the MCP server): {statistics.median(closes) * 1e3:.0f} ms")
    print("one call from sandbox code (kernel -> bridge -> host tool -> back), ms:")
    for name, values in timings.items():
        ms = sorted(v * 1e3 for v in values)
        p50, p90 = ms[len(ms) // 2], ms[int(len(ms) * 0.9)]
        report[name] = {
            "p50_ms": round(p50, 3),
            "p90_ms": round(p90, 3),
            "max_ms": round(ms[-1], 3),
        }
        print(f"  {name:13s} p50 {p50:6.2f}  p90 {p90:6.2f}  max {ms[-1]:7.2f}")
    print(f"written to {write_results('tools', report, out)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "tools.json")
    args = parser.parse_args()
    anyio.run(main, args.calls, args.json)
