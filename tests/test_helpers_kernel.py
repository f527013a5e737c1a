"""The kernel helpers ``search`` and ``llm_map`` in a real sandbox (Docker, no network).

``search`` runs over the three context shapes the loader produces (text, a JSONL list, a
directory as a dict of files). ``llm_map`` runs in a full engine run whose sub model is the
replay server, scripted to drop an item from a packed reply, so only that item is retried.
Set ``RLM_SANDBOX_IMAGE`` to test an image built from this tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineConfig, Limits
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm.trajectory import read_trajectory
from engine.sandbox import Sandbox, SandboxConfig

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

ESSAY = (
    "It was a long summer. " * 200
    + "One of the special magic numbers for quiet-lake is: 4719203. "
    + "The garden grew. " * 200
)


async def run_cell(context: Any, code: str) -> str:
    async with Sandbox(SandboxConfig.from_env(), context=context) as sandbox:
        result = await sandbox.execute(code, cell_timeout_s=60)
    assert result.error is None, result.output_text()
    return result.stdout


async def test_helpers_search_text_context() -> None:
    out = await run_cell(
        ESSAY,
        "r = search('magic numbers for quiet-lake')\n"
        "print(len(r), r[0].position, r[0].line)\n"
        "print(r[0].text)\n"
        "print(search('numbers quiet-lake magic', window=60))\n"
        "print(search('no such words here'))\n"
        "print(search(r'is: (\\d+', regex=True))\n"
        "print([h.match for h in search(r'is: \\d+', regex=True)])",
    )
    lines = out.splitlines()
    assert lines[0] == f"1 {ESSAY.index('magic numbers')} 1"
    assert "quiet-lake is: 4719203" in lines[1]
    # Words in another order: found by proximity, and the message says so.
    assert "not found word for word" in out and "[1] char" in out
    assert "search('no such words here'): no match. Try: search for one distinctive word" in out
    assert "is not a valid regex" in out
    assert lines[-1] == "['is: 4719203']"


async def test_helpers_search_list_and_dict_contexts(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"id": i, "label": f"L{i % 3}"}) for i in range(9)))
    out = await run_cell(rows, "print([(h.source, h.match) for h in search('\"L2\"')])")
    assert out.strip() == "[(2, '\"L2\"'), (5, '\"L2\"'), (8, '\"L2\"')]"

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "parser.py").write_text("import re\n\n\ndef find_final(text):\n    pass\n")
    (repo / "README.md").write_text("Use find_final to get answers.\n")
    out = await run_cell(
        repo,
        "r = search('def find_final')\n"
        "print([(h.source, h.line) for h in r])\n"
        "print(search('find_final', max_hits=1))",
    )
    first, rest = out.split("\n", 1)
    assert first == "[('pkg/parser.py', 4)]"
    assert rest.startswith("search('find_final'): 1 of 2 hits\n[1] file 'README.md', char 4")


async def test_helpers_pairs_of_in_the_kernel() -> None:
    out = await run_cell(
        "abc", "found = pairs_of(['12', '9', '100'])\nprint(len(found))\nprint(found)"
    )
    assert out == "3\n(9, 12)\n(9, 100)\n(12, 100)\n"


async def test_helpers_dated_in_the_kernel() -> None:
    code = (
        "rows = [line for line in context.split('\\n') if line.strip()]\n"
        "print(in_date_range(rows, after='Jun 26, 2023'))\n"
        "print(in_date_range(rows, before='2023-06-27', inclusive=True))"
    )
    context = "Jun 26, 2023 | a\n\n2023-06-27 | b\nno date | c\n1 July 2023 | d"
    out = await run_cell(context, code)
    assert out == (
        "['2023-06-27 | b', '1 July 2023 | d']\n['Jun 26, 2023 | a', '2023-06-27 | b']\n"
    )


async def test_helpers_are_restored_when_overwritten() -> None:
    out = await run_cell("abc", "search = None\nllm_map = 1\nprint('x')\n")
    assert "`search` was overwritten; it has been restored." in out


def _sub(contains: str, content: str) -> dict[str, Any]:
    return {"match": {"model": "sub", "contains": contains}, "response": {"content": content}}


async def test_helpers_llm_map_retries_only_unparsed_items(tmp_path: Path) -> None:
    reviews = [
        "The soup was great",
        "The bread was stale",
        "Lovely staff",
        "Service was slow",
        "Cold coffee",
    ]
    root_code = (
        "labels = llm_map(context, 'Label the review positive or negative.', batch_size=3)\n"
        "answer['content'] = json.dumps(labels)\nanswer['ready'] = True"
    )
    entries = [
        {
            "match": {"model": "root"},
            "response": {"content": f"Map it.\n```repl\nimport json\n{root_code}\n```"},
        },
        # Pack 1 (items 1-3): the answer for item 2 is missing, item 3 is in bold markdown.
        _sub("[1] The soup was great", "[1] positive\n**[3]** positive"),
        # Pack 2 (items 4-5), answered in full.
        _sub("[1] Service was slow", "[1] negative\n[2] negative"),
        # Round 2: only item 2 is asked again, alone, and its whole reply is the answer.
        _sub("Text:\nThe bread was stale", "negative"),
    ]
    trajectory = tmp_path / "t.jsonl"
    context = tmp_path / "reviews.json"
    context.write_text(json.dumps(reviews))
    async with ReplayServer(Cassette(entries)) as server:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
            limits=Limits(max_iterations=2),
            trajectory_path=trajectory,
            prompt_profile="frontier",
        )
        async with Engine(config) as engine:
            result = await engine.run("Label each review.", context)
    assert result.error is None
    assert json.loads(result.answer) == ["positive", "negative", "positive", "negative", "negative"]
    calls = [e for e in read_trajectory(trajectory) if e["type"] == "sub_call"]
    assert len(calls) == 3
    retry = [c["prompt"] for c in calls if "Items:" not in c["prompt"]]
    assert len(retry) == 1 and "The bread was stale" in retry[0]
    assert "The soup was great" not in retry[0]
