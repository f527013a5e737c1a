"""Attacks through a sub-model's tool loop (``llm_query(prompt, tools=[...])``).

The sub-model asks for tool calls; each result (up to the registry's 1,000,000 characters of
JSON) is appended to the loop's messages, which stay in the orchestrator's memory and are sent
back whole with every later round. A sub-model steered by a hostile context asks for hundreds
of calls of a tool whose result the attacker makes large (a page it serves), within the run's
tool-call budget. The provider is the replay server in a process of its own, so what grows is
the orchestrator alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.models import ModelClient, ModelSpec
from engine.models._litellm import load_litellm
from engine.tools import ToolsConfig
from engine.tools.registry import FunctionTool, ToolRegistry
from engine.tools.sub_model import MAX_HELD_CHARS, MAX_RESULT_CHARS, run_tool_loop
from tests.attacks.conftest import AttackReport, RssMeter
from tests.attacks.test_attack_model import replay_process
from tests.loop_support import Run, code

pytestmark = pytest.mark.anyio

#: Calls the sub-model asks for in one reply, each of a result just under the registry's cap.
CALLS = 200
PAGE_CHARS = 990_000


def ask(query: str, content: str) -> dict[str, Any]:
    """A root reply to the run whose query is ``query``."""
    return {"match": {"model": "root", "contains": query}, "response": {"content": content}}


def sub_tool(contains: str, call: dict[str, Any]) -> dict[str, Any]:
    """A sub-model reply (once) that asks for one tool call when the prompt holds ``contains``."""
    return {
        "match": {"model": "sub", "contains": contains},
        "response": {"content": "", "tool_calls": [call]},
    }


def page(n: int) -> str:
    """A page of the attacker's site, as large as the tool result cap allows."""
    return str(n) * PAGE_CHARS


async def test_attack_sub_model_piles_up_tool_results(
    tmp_path: Path, attack_report: AttackReport
) -> None:
    load_litellm()  # its import is not the attack's growth
    calls = [
        {"id": f"call_{i}", "name": "page", "arguments": json.dumps({"n": i % 10})}
        for i in range(CALLS)
    ]
    entries: list[dict[str, Any]] = [
        {"match": {"model": "sub"}, "response": {"content": "", "tool_calls": calls}},
        {"match": {"model": "sub"}, "response": {"content": "read them"}, "repeat": True},
    ]
    config = ToolsConfig(functions=(FunctionTool(f"{__name__}:page"),))
    with replay_process(entries, tmp_path) as provider:
        spec = ModelSpec("openai/sub", api_base=provider.base_url, api_key="replay")
        async with ToolRegistry(config) as registry:
            meter = RssMeter(os.getpid()).start()
            result = await run_tool_loop(
                ModelClient(), spec, "read the pages", registry, registry.call, ledger=None
            )
            growth = meter.growth()
    kept = MAX_RESULT_CHARS // len(json.dumps(page(0)))
    # The calls kept and the one whose result did not fit were made; the rest were not.
    assert result.text == "read them" and result.tool_calls == kept + 1, result
    refused = CALLS - kept
    attack_report(
        f"a sub-model asks for {CALLS} calls of a tool returning {PAGE_CHARS:,} characters "
        "each (llm_query with tools), all kept in its messages and sent back",
        f"the tool results of one sub-call's loop: at most {MAX_RESULT_CHARS:,} characters; "
        "past it a call is not made and the model is told why",
        f"{kept} results kept, {refused} refused with the reason; the model answered (before: "
        "all 200 kept, the orchestrator grew by 764 MiB in one sub-call)",
        rss_growth=growth,
    )


#: Prompts of one llm_batch with tools: each item's sub-model makes one call of the page tool
#: and then waits, with the page in its messages, for its next round.
BATCH = 300


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_attack_batch_of_tool_loops_piles_up_tool_results(
    tmp_path: Path, attack_report: AttackReport
) -> None:
    load_litellm()
    script = (
        f"r = llm_batch(['PAGE please'] * {BATCH}, tools=['page'])\n"
        "kept = sum(x == 'read it' for x in r)\n"
        "answer['content'] = str(kept)\nanswer['ready'] = True"
    )
    call = {"id": "call_0", "name": "page", "arguments": json.dumps({"n": 7})}
    entries: list[dict[str, Any]] = [
        ask("Say hi", code("answer['content'] = 'hi'\nanswer['ready'] = True")),
        ask("Read the pages", code(script)),
        # One tool-call reply per prompt, then answers: each loop calls the tool once or more.
        *[sub_tool("PAGE please", call)] * BATCH,
        {"match": {"model": "sub"}, "response": {"content": "read it"}, "repeat": True},
    ]
    run = Run(tmp_path)
    with replay_process(entries, tmp_path) as provider:
        config = dataclasses.replace(
            run.config(provider, max_tool_calls=1000, max_sub_calls=2000),  # type: ignore[arg-type]
            tools=ToolsConfig(functions=(FunctionTool(f"{__name__}:page"),)),
        )
        async with Engine(config) as engine:
            assert (await engine.run("Say hi", "ctx")).stop_reason  # libraries imported
            meter = RssMeter(os.getpid()).start()
            result = await engine.run("Read the pages", "ctx")
            growth = meter.growth()
    # Every item answered (a loop may have drawn two tool-call replies before its answer).
    assert result.ready and int(result.answer) == BATCH, result
    attack_report(
        f"llm_batch of {BATCH} prompts with tools: each sub-model calls a tool returning "
        f"{PAGE_CHARS:,} characters, then waits for its next round with the result held",
        f"tool results held by the sub-model loops of one run: at most {MAX_HELD_CHARS:,} "
        "characters at once; a result past it is an error the model is told",
        f"all {BATCH} items answered, those past the limit told why (before: every result "
        "held, the orchestrator grew by 324 MiB)",
        rss_growth=growth,
    )
