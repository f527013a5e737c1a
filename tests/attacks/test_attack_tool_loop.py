"""Attacks through a sub-model's tool loop (``llm_query(prompt, tools=[...])``).

The sub-model asks for tool calls; each result (up to the registry's 1,000,000 characters of
JSON) is appended to the loop's messages, which stay in the orchestrator's memory and are sent
back whole with every later round. A sub-model steered by a hostile context asks for hundreds
of calls of a tool whose result the attacker makes large (a page it serves), within the run's
tool-call budget. The provider is the replay server in a process of its own, so what grows is
the orchestrator alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine.models import ModelClient, ModelSpec
from engine.models._litellm import load_litellm
from engine.tools import ToolsConfig
from engine.tools.registry import FunctionTool, ToolRegistry
from engine.tools.sub_model import MAX_RESULT_CHARS, run_tool_loop
from tests.attacks.conftest import AttackReport, RssMeter
from tests.attacks.test_attack_model import replay_process

pytestmark = pytest.mark.anyio

#: Calls the sub-model asks for in one reply, each of a result just under the registry's cap.
CALLS = 200
PAGE_CHARS = 990_000


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
