"""Pure logic of the tools: signatures as the kernel rebuilds them, MCP results as values.

The kernel stubs are built by ``sandbox-image/rlm_runtime/tools.py`` itself, loaded here from
the image's source (it is standard library only), so what is checked is what the kernel runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mt
import pytest

from engine.tools.mcp_tools import McpServerConfig, _spec, convert_result
from engine.tools.python_tools import load_python_tool
from engine.tools.registry import ToolRegistry
from engine.tools.spec import python_name

pytestmark = pytest.mark.anyio

RUNTIME = Path(__file__).resolve().parents[1] / "sandbox-image" / "rlm_runtime"


def kernel_tools(monkeypatch: pytest.MonkeyPatch, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The stubs the kernel would build from ``RLM_TOOLS``."""
    monkeypatch.syspath_prepend(str(RUNTIME.parent))
    spec = importlib.util.spec_from_file_location("rlm_runtime.tools", RUNTIME / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rlm_runtime.tools", module)
    spec.loader.exec_module(module)
    monkeypatch.setenv("RLM_TOOLS", json.dumps(specs))
    tools: dict[str, Any] = module.make_tools()
    return tools


def f_all_kinds(a, b=2, /, c=3, *rest, d, e="x", **extra):  # type: ignore[no-untyped-def]
    """Every kind of parameter."""


def f_plain(path: str, limit: int = 10) -> list[str]:
    """Plain parameters."""
    return []


def f_no_params() -> None:
    """Nothing."""


@pytest.mark.parametrize("function", [f_all_kinds, f_plain, f_no_params])
def test_kernel_stub_has_the_host_signature(monkeypatch: pytest.MonkeyPatch, function: Any) -> None:
    tool = load_python_tool(f"tests.test_tools_units:{function.__name__}")
    (stub,) = kernel_tools(monkeypatch, [tool.spec.kernel_json()]).values()
    host = inspect.signature(function)
    bare = host.replace(
        parameters=[
            p.replace(annotation=inspect.Parameter.empty) for p in host.parameters.values()
        ],
        return_annotation=inspect.Signature.empty,
    )
    assert str(inspect.signature(stub)) == str(bare)
    assert stub.__name__ == function.__name__
    assert stub.__doc__.splitlines()[0] == tool.spec.signature()


def test_rendered_signatures() -> None:
    assert load_python_tool("tests.test_tools_units:f_all_kinds").spec.signature() == (
        "f_all_kinds(a, b=2, /, c=3, *rest, d, e='x', **extra)"
    )
    assert load_python_tool("tests.test_tools_units:f_plain").spec.signature() == (
        "f_plain(path: str, limit: int = 10) -> list[str]"
    )
    schema = load_python_tool("tests.test_tools_units:f_plain").spec.input_schema
    assert schema == {
        "type": "object",
        "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["path"],
    }


def test_stub_checks_calls_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_python_tool("tests.test_tools_units:f_plain")
    stub = kernel_tools(monkeypatch, [tool.spec.kernel_json()])["f_plain"]
    monkeypatch.delenv("RLM_BRIDGE_SOCKET", raising=False)
    with pytest.raises(TypeError, match="missing a required argument: 'path'"):
        stub()
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'nope'"):
        stub("p", nope=1)
    with pytest.raises(TypeError, match=r"argument 'limit' \(of type object\) cannot be sent"):
        stub("p", limit=object())


def test_mcp_schema_to_signature() -> None:
    tool = mt.Tool(
        name="search-issues",
        description="Search the tracker.",
        input_schema={
            "type": "object",
            "properties": {
                "labels": {"type": "array"},
                "query": {"type": "string", "description": "words"},
                "limit": {"type": "integer", "default": 20},
            },
            "required": ["query"],
        },
    )
    spec = _spec(tool, McpServerConfig(command=("srv",), prefix="gh_"))
    assert spec.signature() == (
        "gh_search_issues(*, query: str, labels: list = None, limit: int = 20)"
    )
    assert (spec.call_name, spec.origin) == ("search-issues", "mcp srv: search-issues")
    assert python_name("2fa.check") == "tool_2fa_check"


def _result(*content: Any, structured: Any = None) -> mt.CallToolResult:
    return mt.CallToolResult(content=list(content), structured_content=structured)


def test_mcp_results_become_python_values() -> None:
    text = mt.TextContent(type="text", text="hello")
    as_json = mt.TextContent(type="text", text='{"a": [1, 2]}')
    image = mt.ImageContent(type="image", data="aGk=", mime_type="image/png")
    assert convert_result(_result(text, structured={"result": 5}), output_wrapped=True) == 5
    assert convert_result(_result(text, structured={"result": 5}), output_wrapped=False) == {
        "result": 5
    }
    assert convert_result(_result(text), output_wrapped=False) == "hello"
    assert convert_result(_result(as_json), output_wrapped=False) == {"a": [1, 2]}
    assert convert_result(_result(text, image), output_wrapped=False) == [
        "hello",
        {"type": "image", "mime_type": "image/png", "base64_chars": 4},
    ]
    assert convert_result(_result(), output_wrapped=False) is None


async def test_tool_loop_records_and_replays(tmp_path: Path) -> None:
    """A sub-model tool loop recorded from a provider replays from its cassette alone."""
    from engine.models import (
        Cassette,
        CassetteRecorder,
        ModelClient,
        ModelSpec,
        ReplayServer,
        replay_spec,
    )
    from engine.tools import FunctionTool, ToolRegistry, ToolsConfig
    from engine.tools.sub_model import run_tool_loop

    call = {"id": "c1", "name": "f_plain", "arguments": json.dumps({"path": "/tmp"})}
    provider = Cassette(
        [
            {"match": {"model": "sub"}, "response": {"content": "", "tool_calls": [call]}},
            {"match": {"model": "sub"}, "response": {"content": "the folder is empty"}},
        ]
    )
    seen: list[tuple[str, dict[str, Any]]] = []
    config = ToolsConfig(functions=(FunctionTool("tests.test_tools_units:f_plain"),))
    path = tmp_path / "tools.jsonl"
    async with ToolRegistry(config) as registry:

        async def call_tool(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
            seen.append((name, kwargs))
            return await registry.call(name, args, kwargs)

        async def loop(client: ModelClient, spec: ModelSpec) -> Any:
            return await run_tool_loop(client, spec, "List /tmp.", registry, call_tool, ledger=None)

        async with ReplayServer(provider) as live:
            recorded = await loop(
                ModelClient(recorder=CassetteRecorder(path)),
                ModelSpec("openai/sub", api_base=live.base_url),
            )
        async with ReplayServer(path) as replay:
            replayed = await loop(
                ModelClient(), replay_spec(ModelSpec("openai/sub"), replay.base_url)
            )
    assert (recorded.text, recorded.steps, recorded.tool_calls) == ("the folder is empty", 2, 1)
    assert (replayed.text, replayed.steps, replayed.tool_calls) == (recorded.text, 2, 1)
    assert seen == [("f_plain", {"path": "/tmp"})] * 2
    first = json.loads(path.read_text().splitlines()[0])
    assert first["response"]["tool_calls"] == [call]


async def test_tool_arguments_nested_past_the_decoders_limit_are_an_error_for_the_model() -> None:
    # The arguments are a model's text, which a tenant steers: never an exception here.
    from engine.tools import FunctionTool, ToolRegistry, ToolsConfig
    from engine.tools.sub_model import _one

    config = ToolsConfig(functions=(FunctionTool("tests.test_tools_units:f_plain"),))
    async with ToolRegistry(config) as registry:

        async def call_tool(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
            raise AssertionError("must not be called")

        text = await _one("f_plain", "[" * 5_000 + "]" * 5_000, registry, call_tool)
    assert text.startswith("ERROR: the arguments are not valid JSON")


RELEASE = threading.Event()


def f_hangs(x: int) -> int:
    """Blocks until the test releases it (a tool that hangs on some input)."""
    RELEASE.wait(60)
    return x


@asynccontextmanager
async def _hanging_tools() -> AsyncIterator[ToolRegistry]:
    """A registry of ``f_hangs`` with a 0.2 s deadline; on exit every hung call returns and
    its thread is uncounted."""
    from engine.tools import ToolsConfig, python_tools
    from engine.tools.settings import parse_functions

    # The tool is this module as the engine imports it, which pytest may have loaded under
    # another name: release the event that module's function waits on.
    release: threading.Event = importlib.import_module("tests.test_tools_units").RELEASE
    release.clear()
    config = ToolsConfig(
        functions=parse_functions(["tests.test_tools_units:f_hangs"]), timeout_s=0.2
    )
    async with ToolRegistry(config) as tools:
        try:
            yield tools
        finally:
            release.set()
            with anyio.fail_after(10):
                while python_tools._threads.running:
                    await anyio.sleep(0.01)


async def test_hung_python_tool_threads_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread cannot be stopped: each call past its deadline keeps one. Sandbox code calling
    # such a tool in a loop is refused once MAX_RUNNING_CALLS of them are still running.
    from engine.errors import ToolError, ToolTimeoutError
    from engine.tools import python_tools

    monkeypatch.setattr(python_tools, "MAX_RUNNING_CALLS", 3)
    async with _hanging_tools() as tools:
        for _ in range(3):
            with pytest.raises(ToolTimeoutError):
                await tools.call("f_hangs", [1], {})
        with pytest.raises(ToolError, match="3 calls of the engine's Python tools are still"):
            await tools.call("f_hangs", [1], {})
    assert await tools.call("f_hangs", [7], {}) == 7


async def test_one_tenants_hung_python_tool_calls_leave_the_others_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The threads are the process's, shared by every key of a service: one key's hung calls
    # take at most its share (before: all MAX_RUNNING_CALLS, and every key was refused).
    from engine.errors import ToolError, ToolTimeoutError
    from engine.tools import python_tools

    monkeypatch.setattr(python_tools, "MAX_RUNNING_CALLS", 5)
    monkeypatch.setattr(python_tools, "MAX_RUNNING_PER_TENANT", 2)
    async with _hanging_tools() as tools:
        hog, other = tools.for_tenant("hog"), tools.restrict(None).for_tenant("other")
        for _ in range(2):
            with pytest.raises(ToolTimeoutError):
                await hog.call("f_hangs", [1], {})
        with pytest.raises(ToolError, match=r"2 of your calls .* \(at most 2 per API key"):
            await hog.call("f_hangs", [1], {})
        assert python_tools._threads.by_tenant == {"hog": 2}
        # Another tenant still has its share, and the process its cap over all of them.
        for registry in (other, tools, other):
            with pytest.raises(ToolTimeoutError):
                await registry.call("f_hangs", [1], {})
        with pytest.raises(ToolError, match="5 calls of the engine's Python tools"):
            await tools.call("f_hangs", [1], {})
    assert python_tools._threads.by_tenant == {}
    assert await other.call("f_hangs", [7], {}) == 7
