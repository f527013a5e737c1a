"""The rlm-trained profile's conventions come from the installed ``rlms`` package, at run time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine import Engine, EngineConfig, Limits
from engine.errors import ConfigError
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm import trained


def test_trained_prompt_is_the_installed_package_prompt() -> None:
    from rlm.utils import prompts as official

    system, first = trained.opening_messages(
        "What is the key?",
        trained.ContextShape("str", 50_000),
        max_iterations=12,
        tools={"search": "find text in the context"},
    )
    # The package's own system prompt and orchestrator addendum, with our helper as its tool.
    head = official.RLM_SYSTEM_PROMPT.format(custom_tools_section="\0").split("\0")[0]
    assert system.startswith(head)
    assert official.ORCHESTRATOR_ADDENDUM in system
    assert "- `search`: find text in the context" in system
    assert first.startswith("Answer the following: What is the key?")
    assert "Your context is a str of 50000 total characters." in first
    assert first.endswith("Turn 1/12:")
    assert trained.turn_message(1, max_iterations=12) == "Turn 2/12:"
    assert trained.outputs_message("r", [("print(1)", "1\n")]) == "REPL output:\n\n1\n"
    assert trained.package_version() is not None


def test_trained_profile_without_the_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    for name in ("rlm", "rlm.core", "rlm.core.types", "rlm.utils", "rlm.utils.prompts"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'rlm-engine\[trained\]'"):
        trained.opening_messages("q", trained.ContextShape("str", 1), max_iterations=3)


@pytest.mark.anyio
@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_trained_profile_speaks_the_package_format_in_a_real_run(tmp_path: Path) -> None:
    from rlm.utils import prompts as official

    entries = [
        {
            "match": {"model": "root"},
            "response": {
                "content": "Probe first.\n```repl\nprint(llm_query_batched(['a', 'b']))\n```"
            },
        },
        {"match": {"model": "sub", "contains": "a"}, "response": {"content": "A"}},
        {"match": {"model": "sub", "contains": "b"}, "response": {"content": "B"}},
        {
            "match": {"model": "root"},
            "response": {
                "content": '```repl\nanswer["content"] = "done"\nanswer["ready"] = True\n```'
            },
        },
    ]
    async with ReplayServer(Cassette(entries)) as server:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
            limits=Limits(max_iterations=5),
            trajectory_path=tmp_path / "t.jsonl",
            prompt_profile="rlm-trained",
        )
        async with Engine(config) as engine:
            result = await engine.run("Say done.", "some context text")
        calls = [r["messages"] for r in server.requests if r["model"] == "root"]
    assert (result.answer, result.ready) == ("done", True)
    system = calls[0][0]["content"]
    assert official.ORCHESTRATOR_ADDENDUM in system and "- `search`:" in system
    assert calls[0][1]["content"].startswith("Answer the following: Say done.")
    assert calls[0][1]["content"].endswith("Turn 1/5:")
    # The kernel answers to the package's names; outputs come back in its format.
    assert calls[1][-1]["content"] == "REPL output:\n\n['A', 'B']\n\nTurn 2/5:"
