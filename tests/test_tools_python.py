"""Host Python tools end to end: real sandboxes, the real bridge, replayed models.

The tools are the functions of this module (``tests.test_tools_python:lookup``), loaded by
the engine with importlib like a user's ``--tool MODULE:FUNCTION``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import EngineConfig, RunResult
from engine.errors import ConfigError
from engine.models import ReplayServer
from engine.tools import FunctionTool, ToolRegistry, ToolsConfig
from tests.conftest import engine_containers
from tests.loop_support import Run as EngineRun
from tests.loop_support import code, root

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
USERS = {"alice": {"id": 7, "team": "infra"}, "bob": {"id": 9, "team": "web"}}


def lookup(key: str, default: str | None = None) -> dict[str, Any]:
    """Find a user record by name.

    Raises KeyError for an unknown name unless a default is given.
    """
    if key in USERS:
        return USERS[key]
    if default is not None:
        return {"name": default}
    raise KeyError(f"no user named {key}")


async def slow(seconds: float) -> str:
    """Sleep on the host, then say so."""
    await anyio.sleep(seconds)
    return "done"


def odd() -> object:
    """Return something JSON cannot carry."""
    return {1, 2}


def _functions(*names: str) -> tuple[FunctionTool, ...]:
    return tuple(FunctionTool(f"tests.test_tools_python:{n}") for n in names)


class Run(EngineRun):
    """An engine run (the loop tests' harness, Docker backend) with host tools."""

    tools = ToolsConfig()

    def config(
        self, server: ReplayServer, profile: str = "frontier", **limits: Any
    ) -> EngineConfig:
        return dataclasses.replace(super().config(server, profile, **limits), tools=self.tools)

    async def __call__(  # type: ignore[override]
        self,
        entries: list[dict[str, Any]],
        tools: ToolsConfig,
        query: str = "Use the tools.",
        **limits: Any,
    ) -> RunResult:
        self.tools = tools
        return await super().__call__(entries, query, **limits)

    def cells(self) -> list[dict[str, Any]]:
        return self.of_type("cell")

    def requests(self, model: str) -> list[dict[str, Any]]:
        assert self.server is not None
        return [r for r in self.server.requests if r["model"] == model]


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    runner = Run(tmp_path)
    yield runner
    tasks = {e["task_id"] for e in runner.of_type("run_start")}
    assert tasks, "the run wrote no run_start event"
    assert [n for n in engine_containers() if any(t in n for t in tasks)] == []


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_python_tool_by_name_with_its_signature(run: Run) -> None:
    script = (
        "import inspect\n"
        "print(inspect.signature(lookup))\n"
        "print(lookup.__doc__.splitlines()[0])\n"
        "user = lookup('alice')\n"
        "other = lookup(key='zed', default='guest')\n"
        "print(user['team'], other)\n"
        "FINAL(user['id'])"
    )
    result = await run([root(code(script))], ToolsConfig(functions=_functions("lookup")))
    assert (result.answer, result.ready) == ("7", True)
    output = run.cells()[0]["output"]
    assert "(key, default=None)\n" in output
    assert "lookup(key: str, default: str | None = None) -> dict[str, Any]\n" in output
    assert "infra {'name': 'guest'}" in output
    system = run.requests("root")[0]["messages"][0]["content"]
    assert "`lookup(key: str, default: str | None = None) -> dict[str, Any]`" in system
    assert "Find a user record by name." in system
    calls = run.of_type("tool_call")
    assert [c["name"] for c in calls] == ["lookup", "lookup"]
    assert all(c["status"] == "ok" and c["parent_id"] == run.cells()[0]["id"] for c in calls)
    assert json.loads(calls[1]["arguments"]) == {
        "args": [],
        "kwargs": {"key": "zed", "default": "guest"},
    }
    assert calls[0]["result_chars"] == len(json.dumps(USERS["alice"]))
    assert run.of_type("run_end")[0]["tool_calls"] == 2


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_tool_errors_come_back_as_exceptions(run: Run) -> None:
    script = (
        "try:\n    lookup('nobody')\nexcept KeyError as exc:\n    print('KeyError:', exc)\n"
        "try:\n    lookup()\nexcept TypeError as exc:\n    print('TypeError:', exc)\n"
        "try:\n    odd()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
        "try:\n    lookup({1, 2})\nexcept TypeError as exc:\n    print('local:', exc)\n"
        "lookup('nobody')"
    )
    config = ToolsConfig(functions=_functions("lookup", "odd"))
    result = await run([root(code(script)), root("FINAL(done)")], config)
    assert result.ready
    cell = run.cells()[0]
    output = cell["output"]
    assert "KeyError: \"lookup: KeyError: 'no user named nobody'\"" in output
    assert "TypeError: lookup(key, default=None): missing a required argument: 'key'" in output
    assert "TypeError odd returned a set that is not JSON-able" in output
    assert "local: lookup: argument 1 (of type set) cannot be sent to the host" in output
    # Uncaught, the tool's exception ends the cell like any other.
    assert cell["error"].startswith("KeyError:") and "no user named nobody" in cell["error"]
    statuses = [(c["name"], c["status"]) for c in run.of_type("tool_call")]
    assert statuses == [("lookup", "error"), ("odd", "error"), ("lookup", "error")]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_tool_timeout_and_budget(run: Run) -> None:
    script = (
        "try:\n    slow(30)\nexcept TimeoutError as exc:\n    print('timeout:', exc)\n"
        "print(slow(0))\n"
        "try:\n    slow(0)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    config = ToolsConfig(functions=_functions("slow"), timeout_s=0.5)
    result = await run([root(code(script)), root("FINAL(ok)")], config, max_tool_calls=2)
    assert result.ready
    output = run.cells()[0]["output"]
    assert "timeout: slow: " not in output  # the message is the engine's, named once
    assert "timeout: slow did not finish within 0.5 s" in output
    assert "done" in output
    assert "BudgetExhausted tool-call budget of 2 calls used up" in output
    calls = run.of_type("tool_call")
    assert [c["status"] for c in calls] == ["error", "ok"]  # the refused call never ran
    assert "- at most 2 tool calls in total;" in run.requests("root")[0]["messages"][0]["content"]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_sub_model_calls_a_tool(run: Run) -> None:
    script = "r = llm_query('Which team is alice on?', tools=['lookup'])\nFINAL(r)"
    call = {"id": "call_1", "name": "lookup", "arguments": json.dumps({"key": "alice"})}
    entries = [
        root(code(script)),
        {"match": {"model": "sub"}, "response": {"content": "", "tool_calls": [call]}},
        {"match": {"model": "sub"}, "response": {"content": "alice is on infra"}},
    ]
    result = await run(entries, ToolsConfig(functions=_functions("lookup")))
    assert (result.answer, result.ready) == ("alice is on infra", True)
    first, second = run.requests("sub")
    assert first["tools"][0]["function"]["name"] == "lookup"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["key"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"]) == USERS["alice"]
    (sub_call,) = run.of_type("sub_call")
    (tool_call,) = run.of_type("tool_call")
    assert tool_call["parent_id"] == sub_call["id"]
    assert (sub_call["tools"], sub_call["tool_rounds"], sub_call["tool_calls"]) == (
        ["lookup"],
        2,
        1,
    )
    # The trajectory viewer shows the call as a tool node inside the sub-call.
    from engine.cli.main import main
    from tests.test_service_viewer import run_chromium

    page = run.tmp_path / "view.html"
    assert main(["view", str(run.trajectory), "--out", str(page), "--no-open"]) == 0
    dom = run_chromium(run.tmp_path, page.as_uri(), "--dump-dom")
    assert dom.count('class="node node-tool"') == 1
    assert f"lookup · ok · {len(json.dumps(USERS['alice']))} chars" in dom


@pytest.mark.parametrize("name", ["print", "context", "llm_query", "FINAL", "answer"])
async def test_names_that_clash_with_the_kernel_are_refused(name: str) -> None:
    config = ToolsConfig(functions=(FunctionTool("tests.test_tools_python:lookup", name),))
    with pytest.raises(ConfigError, match=f"the name '{name}' clashes"):
        async with ToolRegistry(config):
            pass


async def test_bad_references_are_clear_errors() -> None:
    cases = {
        "nomodule_xyz:f": "cannot import module 'nomodule_xyz'",
        "tests.test_tools_python:missing": "has no attribute 'missing'",
        "tests.test_tools_python": "must be written MODULE:FUNCTION",
        "tests.test_tools_python:USERS": "is a dict, not callable",
    }
    for ref, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            async with ToolRegistry(ToolsConfig(functions=(FunctionTool(ref),))):
                pass
    twice = ToolsConfig(functions=_functions("lookup", "lookup"))
    with pytest.raises(ConfigError, match="two tools are called 'lookup'"):
        async with ToolRegistry(twice):
            pass


async def test_a_job_can_restrict_tools_but_not_add() -> None:
    async with ToolRegistry(ToolsConfig(functions=_functions("lookup", "slow"))) as registry:
        assert registry.restrict(["slow"]).names == ("slow",)
        assert registry.restrict(None).names == ("lookup", "slow")
        with pytest.raises(ConfigError, match="unknown tool 'odd'"):
            registry.restrict(["odd"])


def test_tool_settings_from_flags_toml_and_environment(tmp_path: Path) -> None:
    from engine.config import load_config

    toml = tmp_path / "rlm.toml"
    toml.write_text(
        "[limits]\nmax_tool_calls = 5\ntool_timeout = 9\n\n"
        '[[tools]]\nfunction = "tests.test_tools_python:lookup"\nname = "find"\n\n'
        '[[mcp]]\ncommand = ["uvx", "mcp-server-time"]\n\n[[mcp]]\nurl = "http://h/mcp"\n'
    )
    config = load_config({}, env={}, config_file=toml)
    assert config.limits.max_tool_calls == 5 and config.tools.timeout_s == 9
    assert config.tools.functions == (FunctionTool("tests.test_tools_python:lookup", "find"),)
    assert [s.label for s in config.tools.mcp] == ["uvx mcp-server-time", "http://h/mcp"]
    flags = {"tools": ["tests.test_tools_python:slow"], "mcp": ["srv --x"], "max_tool_calls": 1}
    config = load_config(flags, env={"RLM_TOOL_FUNCTIONS": "a:b,c:d"}, config_file=toml)
    assert config.tools.functions == _functions("slow")
    assert config.tools.mcp[0].command == ("srv", "--x")
    assert config.limits.max_tool_calls == 1
    from_env = load_config({}, env={"RLM_TOOL_FUNCTIONS": "a:b, c:d", "RLM_MCP_SERVERS": "x y;z"})
    assert [f.function for f in from_env.tools.functions] == ["a:b", "c:d"]
    assert [s.command for s in from_env.tools.mcp] == [("x", "y"), ("z",)]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tools]]\nfunc = "a:b"\n')
    with pytest.raises(ConfigError, match="needs function ="):
        load_config({}, env={}, config_file=bad)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_rlm_run_with_tool_flags(tmp_path: Path) -> None:
    # A subprocess: `rlm` configures process-wide logging, which must not leak into other tests.
    cassette = tmp_path / "run.jsonl"
    reply = code("FINAL(lookup('bob')['team'] + ' ' + str(SHOW_VARS()))")
    cassette.write_text(json.dumps(root(reply)) + "\n")
    argv = ["run", "-q", "Which team is bob on?", "--model", "openai/root"]
    argv += ["--replay", str(cassette), "--tool", "tests.test_tools_python:lookup"]
    argv += ["--max-tool-calls", "3", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "RLM_TRAJECTORY_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "web {}"  # tools are not user variables


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_llm_batch_sub_models_call_tools(run: Run) -> None:
    script = (
        "r = llm_batch(['Team of alice?', 'Team of bob?'], tools=['lookup'])\nFINAL(' / '.join(r))"
    )
    entries = [root(code(script))]
    for name, team in (("alice", "infra"), ("bob", "web")):
        call = {"id": f"call_{name}", "name": "lookup", "arguments": json.dumps({"key": name})}
        match = {"model": "sub", "contains": name}
        entries.append({"match": match, "response": {"content": "", "tool_calls": [call]}})
        entries.append({"match": match, "response": {"content": f"{name}: {team}"}})
    result = await run(entries, ToolsConfig(functions=_functions("lookup")))
    assert (result.answer, result.ready) == ("alice: infra / bob: web", True)
    subs = {e["id"]: e for e in run.of_type("sub_call")}
    tools = run.of_type("tool_call")
    assert sorted(json.loads(t["arguments"])["kwargs"]["key"] for t in tools) == ["alice", "bob"]
    assert all(subs[t["parent_id"]]["tools"] == ["lookup"] for t in tools)
