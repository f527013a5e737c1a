"""End-to-end runs of the root loop: real Docker sandboxes, real bridge, replayed models.

Each test scripts the root model ("root") and the sub model ("sub") in a cassette served by
the replay server over real HTTP; everything else (kernel, bridge, budgets) is the real thing.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineConfig, Limits, RunResult
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm import prompts
from engine.rlm.trajectory import read_trajectory
from tests.conftest import engine_containers

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


def root(content: str, *, repeat: bool = False, **usage: int) -> dict[str, Any]:
    response: dict[str, Any] = {"content": content}
    if usage:
        response["usage"] = usage
    return {"match": {"model": "root"}, "response": response, "repeat": repeat}


def sub(contains: str | None, content: str, *, repeat: bool = False, **extra: Any) -> dict:
    match = {"model": "sub"} | ({"contains": contains} if contains else {})
    return {"match": match, "response": {"content": content}, "repeat": repeat, **extra}


def code(source: str, before: str = "Next step.") -> str:
    # The closing fence plus text after it: the replay server cuts at the stop sequence like
    # a real provider, so the invented "output" after the block must never reach the kernel.
    return f"{before}\n```repl\n{source}\n```\n\nOutput: (invented by the model)\n"


class Run:
    """One engine run against a scripted replay server; keeps what the tests inspect."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.trajectory = tmp_path / "trajectory.jsonl"
        self.server: ReplayServer | None = None
        self.result: RunResult | None = None
        self.events: list[dict[str, Any]] = []

    async def __call__(
        self,
        entries: list[dict[str, Any]],
        query: str,
        context: Any = None,
        profile: str = "frontier",
        **limits: Any,
    ) -> RunResult:
        async with ReplayServer(Cassette(entries)) as server:
            self.server = server
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
                limits=Limits(**limits),
                trajectory_path=self.trajectory,
                prompt_profile=profile,
            )
            async with Engine(config) as engine:
                self.result = await engine.run(query, context)
        self.events = read_trajectory(self.trajectory)
        return self.result

    def root_requests(self) -> list[dict[str, Any]]:
        assert self.server is not None
        return [r for r in self.server.requests if r["model"] == "root"]

    def last_user(self, request_index: int) -> str:
        messages = self.root_requests()[request_index]["messages"]
        return next(m["content"] for m in reversed(messages) if m["role"] == "user")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def task_ids(self) -> set[str]:
        return {e["task_id"] for e in self.of_type("run_start")}


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    runner = Run(tmp_path)
    yield runner
    # Every sandbox of the run (children too) must be gone once the run returns.
    leftovers = [n for n in engine_containers() if any(t in n for t in runner.task_ids())]
    assert leftovers == []
    assert runner.task_ids(), "the run wrote no run_start event"


def _log_file(tmp_path: Path, errors: int) -> Path:
    rng = random.Random(errors)
    lines = [f"2024-01-01 INFO step {i}" for i in range(500)]
    for index in rng.sample(range(500), errors):
        lines[index] = f"2024-01-01 ERROR failure {index}"
    path = tmp_path / "app.log"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_grep_style_solve_in_one_cell(run: Run, tmp_path: Path) -> None:
    context = _log_file(tmp_path, errors=37)
    reply = code(
        "n = sum('ERROR' in line for line in context.splitlines())\n"
        "answer['content'] = str(n)\nanswer['ready'] = True"
    )
    result = await run([root(reply)], "How many ERROR lines?", context)
    assert (result.answer, result.ready, result.stop_reason) == ("37", True, "answer")
    assert result.iterations == 1 and result.sub_calls == 0
    assert result.usage_root.total_tokens > 0 and result.usage_sub.total_tokens == 0
    assert result.trajectory_path == run.trajectory
    # The prompt describes the context without containing it.
    system = run.root_requests()[0]["messages"][0]["content"]
    assert f"{len(context.read_text()):,} characters" in system
    assert "failure" not in system.split("Preview")[0]
    assert run.root_requests()[0]["stop"] == ["\n```\n"]
    types = [e["type"] for e in run.events]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert {"sandbox_ready", "turn", "cell"} <= set(types)
    (cell,) = run.of_type("cell")
    assert "Output:" not in cell["code"] and cell["answer_ready"] is True
    for event in run.events:
        assert {"id", "parent_id", "task_id", "depth", "t"} <= event.keys()
    assert run.events[0]["parent_id"] is None


async def test_chunks_and_llm_batch(run: Run) -> None:
    sections = [f"SECTION {i}: " + "filler text " * 200 for i in range(6)]
    context = "\n".join(sections)
    counts = [3, 1, 4, 1, 5, 9]
    reply = code(
        "chunks = context.split('\\n')\n"
        "found = llm_batch([f'Count the apples in: {c}' for c in chunks])\n"
        "print(found)\n"
        "answer['content'] = str(sum(int(f) for f in found))\nanswer['ready'] = True"
    )
    entries = [root(reply)] + [sub(f"SECTION {i}:", str(n)) for i, n in enumerate(counts)]
    result = await run(entries, "How many apples?", context)
    assert result.answer == str(sum(counts)) and result.ready
    assert result.sub_calls == 6
    assert result.usage_sub.total_tokens > 0
    subs = run.of_type("sub_call")
    (cell,) = run.of_type("cell")
    assert len(subs) == 6 and {s["parent_id"] for s in subs} == {cell["id"]}
    assert sorted(s["response"] for s in subs) == sorted(str(n) for n in counts)


async def test_rlm_query_runs_a_child_in_its_own_sandbox(run: Run) -> None:
    parent = code(
        "import os\nprint('parent depth', os.environ['RLM_DEPTH'])\n"
        "word = rlm_query('What is the secret word?', context='the secret word is PLUM')\n"
        "answer['content'] = word.lower()\nanswer['ready'] = True"
    )
    child = code(
        "import os\nprint('child depth', os.environ['RLM_DEPTH'])\n"
        "answer['content'] = context.split()[-1]\nanswer['ready'] = True"
    )
    entries = [root(parent), {"match": {"model": "sub"}, "response": {"content": child}}]
    result = await run(entries, "Find the word via a child.", max_depth=2)
    assert (result.answer, result.ready) == ("plum", True)
    assert result.sub_calls == 1
    starts = run.of_type("run_start")
    assert [s["depth"] for s in starts] == [1, 2]
    assert len(run.task_ids()) == 2
    (call,) = run.of_type("sub_call")
    assert call["kind"] == "rlm_query" and call["response"] == "PLUM"
    assert starts[1]["parent_id"] == call["id"]
    assert starts[1]["context_arg"]["kind"] == "path"
    cells = run.of_type("cell")
    assert [c["depth"] for c in cells] == [2, 1]
    assert "child depth 2" in cells[0]["output"]
    child_context = next(e for e in run.of_type("sandbox_ready") if e["depth"] == 2)["context"]
    assert child_context["length_chars"] == len("the secret word is PLUM")


async def test_rlm_query_at_depth_limit_falls_back_to_llm_query(run: Run) -> None:
    parent = code(
        "r = rlm_query('Which fruit is named?', context='a PEAR is here')\n"
        "answer['content'] = r\nanswer['ready'] = True"
    )
    entries = [root(parent), sub("a PEAR is here", "pear")]
    result = await run(entries, "Use a sub-call.")  # max_depth defaults to 1
    assert result.answer == "pear"
    (call,) = run.of_type("sub_call")
    assert call["kind"] == "llm_query"
    assert call["prompt"].startswith("Which fruit is named?") and "a PEAR is here" in call["prompt"]
    assert len(run.task_ids()) == 1


async def test_context_reassignment_is_restored(run: Run) -> None:
    context = "x" * 1234
    entries = [
        root(code("context = 'oops'\nprint(len(context))")),
        root(code("answer['content'] = str(len(context))\nanswer['ready'] = True")),
    ]
    result = await run(entries, "How long is the context?", context)
    assert result.answer == "1234"
    assert "restored" in run.last_user(1)


@pytest.mark.parametrize(
    ("final_line", "expected"),
    [("FINAL_VAR(total)", "6"), ("FINAL(total * 2)", "12"), ('FINAL("six")', "six")],
)
async def test_final_in_prose(run: Run, final_line: str, expected: str) -> None:
    entries = [
        root(code("total = sum([1, 2, 3])\nprint(total)")),
        root(f"The total is computed.\n{final_line}"),
    ]
    result = await run(entries, "Sum it.", "ctx")
    assert (result.answer, result.ready, result.stop_reason) == (expected, True, "final")
    assert result.iterations == 2


async def test_final_var_of_missing_variable_is_reported_to_the_model(run: Run) -> None:
    entries = [
        root("FINAL_VAR(nothing_here)"),
        root(code("answer['content'] = 'ok'\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "ok" and result.iterations == 2
    assert "no variable `nothing_here`" in run.last_user(1)


async def test_reply_without_code_gets_a_nudge(run: Run) -> None:
    entries = [
        root("I would start by thinking about the problem in general terms. " * 10),
        root(code("print(context[:5])")),
        root("The answer is blue."),
        root(code("answer['content'] = 'blue'\nanswer['ready'] = True")),
    ]
    result = await run(entries, "What colour?", "blue sky")
    assert result.answer == "blue" and result.ready and result.iterations == 4
    assert run.last_user(1) == prompts.no_code_nudge("frontier")
    assert run.last_user(3) == prompts.prose_answer_nudge("frontier")
    assert [n["reason"] for n in run.of_type("nudge")] == ["no_code", "prose_answer"]
    # Turns alternate: every assistant reply is followed by a user message.
    messages = run.root_requests()[3]["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]


async def test_repeated_cell_is_not_run_again_and_the_model_is_told(run: Run) -> None:
    probe = "counter = globals().get('counter', 0) + 1\nprint('run', counter)"
    entries = [
        root(code(probe)),
        # The same cell in a different reply (an identical reply is a repeated_reply).
        root(code(probe, before="Once more.")),
        root(code("answer['content'] = str(counter)\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "1" and result.ready
    assert [c["code"] for c in run.of_type("cell")][1:] == [
        "answer['content'] = str(counter)\nanswer['ready'] = True"
    ]
    nudges = run.of_type("nudge")
    assert [n["reason"] for n in nudges] == ["repeated_code"]
    assert "identical to one that already ran" in run.last_user(2)


async def test_small_profile_is_told_how_little_a_slice_showed(run: Run) -> None:
    context = "filler line\n" * 500 + "the key is 42\n"
    entries = [
        root(code("print(context[:100])")),
        root(code("import re\nprint(re.findall(r'key is (\\d+)', context))")),
        root(code("answer['content'] = '42'\nanswer['ready'] = True")),
    ]
    result = await run(entries, "What is the key?", context, profile="small")
    assert result.answer == "42" and result.ready
    assert [n["reason"] for n in run.of_type("nudge")] == ["partial_view"]
    assert f"only 100 of the {len(context):,} characters" in run.last_user(1)
    assert "Do NOT answer yet" in run.last_user(1)
    assert "If the output above contains the answer" in run.last_user(2)  # a search: as usual


async def test_prose_answer_is_not_accepted_silently_at_the_limit(run: Run) -> None:
    entries = [root(code("print(len(context))")), root("The answer is 8.")]
    result = await run(entries, "How long?", "12345678", max_iterations=2)
    assert (result.answer, result.ready, result.stop_reason) == (
        "The answer is 8.",
        False,
        "max_iterations",
    )


async def test_cell_timeout_keeps_kernel_state(run: Run) -> None:
    entries = [
        root(code("import time\nx = 7\ntime.sleep(60)")),
        root(code("answer['content'] = str(x)\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx", cell_timeout_s=2)
    assert result.answer == "7" and result.ready
    assert run.of_type("cell")[0]["timed_out"] is True
    assert "longer than 2 s and was interrupted" in run.last_user(1)
    assert "cells are stopped after 2 s" in run.last_user(1)


async def test_max_iterations_returns_partial_answer(run: Run) -> None:
    entries = [root(code("answer['content'] = 'partial'\nprint('working')"), repeat=True)]
    result = await run(entries, "q", "ctx", max_iterations=3)
    assert (result.answer, result.ready, result.stop_reason) == ("partial", False, "max_iterations")
    assert result.iterations == 3 and len(run.root_requests()) == 3


async def test_max_tokens(run: Run) -> None:
    entries = [root(code("print(1)"), repeat=True, prompt_tokens=900, completion_tokens=100)]
    result = await run(entries, "q", "ctx", max_tokens=2500)
    assert result.stop_reason == "max_tokens" and not result.ready
    assert len(run.root_requests()) == 3 and result.usage_total.total_tokens == 3000


async def test_max_cost(run: Run, tmp_path: Path) -> None:
    # A priced model name (litellm's local price table) makes the replayed calls cost money.
    cassette = tmp_path / "priced.jsonl"
    entry = {
        "match": {"model": "gpt-4o-mini"},
        "response": {
            "content": code("print(1)"),
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0},
        },
        "repeat": True,
    }
    cassette.write_text(json.dumps(entry) + "\n")
    config = EngineConfig(
        model=ModelSpec("openai/gpt-4o-mini"),
        limits=Limits(max_cost_usd=0.25),
        replay=cassette,
        trajectory_path=run.trajectory,
    )
    async with Engine(config) as engine:
        result = await engine.run("q", "ctx")
    run.events = read_trajectory(run.trajectory)
    assert result.stop_reason == "max_cost" and not result.ready
    assert result.iterations == 2
    assert 0.25 <= result.usage_total.cost_usd < 0.5


async def test_max_sub_calls_refuses_extra_items_and_stops(run: Run) -> None:
    entries = [
        root(code("r = llm_batch(['a', 'b', 'c', 'd'])\nprint(r)")),
        sub(None, "fine", repeat=True),
    ]
    result = await run(entries, "q", "ctx", max_sub_calls=2)
    assert result.stop_reason == "max_sub_calls" and result.sub_calls == 2
    (cell,) = run.of_type("cell")
    assert cell["output"].count("'fine'") == 2
    assert cell["output"].count("[ERROR] sub-call budget of 2 calls used up") == 2


async def test_max_wall_time_cancels_a_running_cell(run: Run) -> None:
    entries = [root(code("import time\ntime.sleep(120)"))]
    result = await run(entries, "q", "ctx", max_wall_time_s=8, cell_timeout_s=100)
    assert result.stop_reason == "max_wall_time" and not result.ready
    assert result.wall_s < 60


async def test_wrong_bridge_token_is_rejected(run: Run) -> None:
    probe = (
        "import os\nos.environ['RLM_BRIDGE_TOKEN'] = 'not-the-token'\n"
        "try:\n    llm_query('hello')\nexcept Exception as exc:\n    print('refused:', exc)"
    )
    entries = [
        root(code(probe)),
        root(code("answer['content'] = 'done'\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "done"
    assert result.sub_calls == 0 and run.of_type("sub_call") == []
    output = run.of_type("cell")[0]["output"]
    assert "refused:" in output and "401" in output


async def test_sandbox_code_cannot_pick_an_unconfigured_model(run: Run) -> None:
    probe = (
        "try:\n    llm_query('hello', model='openai/gpt-4o')\n"
        "except Exception as exc:\n    print('refused:', exc)\n"
        "print('ok:', llm_query('hello', model='openai/sub'))"
    )
    entries = [
        root(code(probe)),
        sub("hello", "HI"),
        root(code("answer['content'] = 'done'\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "done"
    output = run.of_type("cell")[0]["output"]
    assert "refused:" in output and "not available to sandbox code" in output
    assert "ok: HI" in output
    assert [r["model"] for r in run.server.requests if r["model"] != "root"] == ["sub"]


async def test_sub_call_failure_inside_a_batch(run: Run) -> None:
    entries = [
        root(code("r = llm_batch(['item one', 'item two', 'item three'])\nprint(r)")),
        sub("item one", "ONE"),
        sub("item two", "", status=400, response={"error": {"message": "scripted failure"}}),
        sub("item three", "THREE"),
        root(
            code(
                "answer['content'] = ','.join(x for x in r if not x.startswith('[ERROR]'))\n"
                "answer['ready'] = True"
            )
        ),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "ONE,THREE" and result.ready
    statuses = sorted(s["status"] for s in run.of_type("sub_call"))
    assert statuses == ["error", "ok", "ok"]
    output = run.of_type("cell")[0]["output"]
    assert "'ONE'" in output and "[ERROR]" in output and "'THREE'" in output


async def test_record_then_replay_gives_the_same_run(run: Run, tmp_path: Path) -> None:
    reply = code(
        "parts = llm_batch([f'shout {w}' for w in context.split()])\n"
        "answer['content'] = ' '.join(parts)\nanswer['ready'] = True"
    )
    entries = [root(reply), sub("shout a", "A"), sub("shout b", "B"), sub("shout c", "C")]
    recorded = tmp_path / "recorded.jsonl"
    async with ReplayServer(Cassette(entries)) as provider:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=provider.base_url, api_key="x"),
            sub_model=ModelSpec("openai/sub", api_base=provider.base_url, api_key="x"),
            record=recorded,
            trajectory_path=tmp_path / "first.jsonl",
        )
        async with Engine(config) as engine:
            first = await engine.run("Shout the words.", "a b c")
    assert first.answer == "A B C"
    assert len(recorded.read_text().splitlines()) == 4
    # Replay: no provider at all, answers matched by request hash.
    config = EngineConfig(
        model=ModelSpec("openai/root", api_base="http://127.0.0.1:9/v1"),
        sub_model=ModelSpec("openai/sub"),
        replay=recorded,
        trajectory_path=run.trajectory,
    )
    async with Engine(config) as engine:
        second = await engine.run("Shout the words.", "a b c")
    run.events = read_trajectory(run.trajectory)
    assert (second.answer, second.ready, second.sub_calls) == ("A B C", True, 3)


async def test_cancelling_a_run_cleans_up_and_records_it(run: Run) -> None:
    import anyio

    seen: list[dict[str, Any]] = []
    entries = [root(code("import time\ntime.sleep(120)"))]
    async with ReplayServer(Cassette(entries)) as server:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            trajectory_path=run.trajectory,
        )
        async with Engine(config) as engine:
            with anyio.move_on_after(60) as scope:
                async with anyio.create_task_group() as group:

                    def watch(event: dict[str, Any]) -> None:
                        seen.append(event)
                        if event["type"] == "turn":
                            group.cancel_scope.cancel()

                    group.start_soon(engine.run, "q", "ctx", watch)
    assert not scope.cancelled_caught
    run.events = read_trajectory(run.trajectory)
    assert run.events[-1]["type"] == "run_end"
    assert run.events[-1]["stop_reason"] == "cancelled"


async def test_kernel_death_ends_the_run_with_the_reason(run: Run) -> None:
    from engine.sandbox import SandboxConfig

    hog = code("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))")
    entries = [root(code("answer['content'] = 'so far'\nprint(1)")), root(hog)]
    async with ReplayServer(Cassette(entries)) as server:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            sandbox=SandboxConfig(memory_bytes=256 << 20, auto_memory=False),
            trajectory_path=run.trajectory,
        )
        async with Engine(config) as engine:
            result = await engine.run("q", "ctx")
    run.events = read_trajectory(run.trajectory)
    assert result.stop_reason == "error" and not result.ready
    assert result.answer == "so far"
    assert result.error is not None and "memory" in result.error


async def test_child_without_answer_raises_in_the_parent_cell(run: Run) -> None:
    parent = code(
        "try:\n    rlm_query('Find it.', context='nothing useful')\n"
        "except Exception as exc:\n    print('child failed:', exc)\n"
        "answer['content'] = 'fallback'\nanswer['ready'] = True"
    )
    entries = [root(parent), {"match": {"model": "sub"}, "response": {"content": code("1")}}]
    result = await run(entries, "q", max_depth=2, max_iterations=1)
    assert result.answer == "fallback" and result.ready
    output = next(c for c in run.of_type("cell") if c["depth"] == 1)["output"]
    assert "child failed:" in output
    assert "child RLM stopped (max_iterations) without an answer" in output
    (call,) = run.of_type("sub_call")
    assert call["stop_reason"] == "max_iterations" and call["response"] == ""


async def test_concurrent_runs_on_one_engine_keep_separate_trajectories(tmp_path: Path) -> None:
    import anyio

    def solve(word: str) -> dict[str, Any]:
        reply = code(f"answer['content'] = context + '-{word}'\nanswer['ready'] = True")
        return {
            "match": {"model": "root", "contains": f"Tag {word}"},
            "response": {"content": reply},
        }

    results: dict[str, RunResult] = {}
    async with ReplayServer(Cassette([solve("one"), solve("two")])) as server:
        config = EngineConfig(
            model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
            trajectory_dir=tmp_path / "runs",
        )
        async with Engine(config) as engine, anyio.create_task_group() as group:

            async def one(word: str) -> None:
                results[word] = await engine.run(f"Tag {word}", f"ctx{word}")

            group.start_soon(one, "one")
            group.start_soon(one, "two")
    assert results["one"].answer == "ctxone-one" and results["two"].answer == "ctxtwo-two"
    for result in results.values():
        assert result.trajectory_path == tmp_path / "runs" / f"{result.task_id}.jsonl"
        events = read_trajectory(result.trajectory_path)
        assert {e["task_id"] for e in events} == {result.task_id}
        assert events[-1]["answer"] == result.answer
        assert not [n for n in engine_containers() if result.task_id in n]
