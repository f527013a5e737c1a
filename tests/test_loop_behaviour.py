"""The root loop's behaviour, with no Docker: the in-process fake sandbox, real everything else.

Each test scripts the root and sub models in a cassette served by the replay server over real
HTTP; the engine, the loop, budgets, the trajectory and child runs are the real thing, and the
sandbox is :class:`engine.sandbox.fake.FakeSandbox` (the kernel's contract, run with exec).
The Docker sandbox and bridge are covered end to end in ``test_rlm_engine.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine, EngineConfig, Limits
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm import prompts
from engine.rlm.trajectory import read_trajectory
from engine.sandbox.fake import FakeBackend
from tests.loop_support import (
    Run,
    code,
    done,
    llm_batch_under_one_cell,
    llm_map_with_choices_counts_labels,
    rlm_query_child_one_level_down,
    root,
    sandbox_code_cannot_pick_an_unconfigured_model,
    sub,
    sub_call_waits_do_not_count_toward_the_cell_timeout,
)

pytestmark = pytest.mark.anyio

# A cell that runs until interrupted (a C-level sleep would see the interrupt only when it
# returns, in the fake; the Docker sandbox's SIGINT also interrupts sleeps).
SPIN = "x = 7\nwhile True:\n    pass"


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    runner = Run(tmp_path, FakeBackend(interrupt_grace_s=1.0))
    yield runner
    assert runner.task_ids(), "the run wrote no run_start event"


def _log_file(tmp_path: Path, errors: int) -> Path:
    lines = [f"2024-01-01 INFO step {i}" for i in range(500)]
    for index in range(3, 500, 500 // errors)[:errors]:
        lines[index] = f"2024-01-01 ERROR failure {index}"
    path = tmp_path / "app.log"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_loop_solves_in_one_cell_and_records_the_run(run: Run, tmp_path: Path) -> None:
    context = _log_file(tmp_path, errors=37)
    reply = code(
        "n = sum('ERROR' in line for line in context.splitlines())\n"
        "answer['content'] = str(n)\nanswer['ready'] = True"
    )
    result = await run([root(reply)], "How many ERROR lines?", context)
    assert (result.answer, result.ready, result.stop_reason) == ("37", True, "answer")
    assert result.iterations == 1 and result.sub_calls == 0
    assert result.usage_root.total_tokens > 0 and result.usage_sub.total_tokens == 0
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
    assert run.events[0]["profile"] == "frontier"


async def test_loop_llm_batch_counts_sub_calls_under_the_cell(run: Run) -> None:
    await llm_batch_under_one_cell(run)


async def test_loop_rlm_query_runs_a_child_loop_one_level_down(run: Run) -> None:
    await rlm_query_child_one_level_down(run)
    assert run.backend.opened == [s["task_id"] for s in run.of_type("run_start")]
    # The child's own system prompt says it cannot go deeper.
    child_system = next(r for r in run.server.requests if r["model"] == "sub")["messages"][0]
    assert "same as `llm_query`" in child_system["content"]


async def test_loop_child_gets_a_structured_context(run: Run) -> None:
    parent = code(
        "n = rlm_query('How many rows?', context=[{'a': 1}, {'a': 2}, {'a': 3}])\n"
        "answer['content'] = n\nanswer['ready'] = True"
    )
    child = code("answer['content'] = str(len(context))\nanswer['ready'] = True")
    entries = [root(parent), {"match": {"model": "sub"}, "response": {"content": child}}]
    result = await run(entries, "q", max_depth=2)
    assert result.answer == "3"
    child_context = next(e for e in run.of_type("sandbox_ready") if e["depth"] == 2)["context"]
    assert (child_context["kind"], child_context["items"]) == ("json", 3)


async def test_loop_rlm_query_at_depth_limit_falls_back_to_llm_query(run: Run) -> None:
    parent = code(
        "r = rlm_query('Which fruit is named?', context='a PEAR is here')\n"
        "answer['content'] = r\nanswer['ready'] = True"
    )
    result = await run([root(parent), sub("a PEAR is here", "pear")], "Use a sub-call.")
    assert result.answer == "pear"
    (call,) = run.of_type("sub_call")
    assert call["kind"] == "llm_query"
    assert call["prompt"].startswith("Which fruit is named?") and "a PEAR is here" in call["prompt"]
    assert len(run.task_ids()) == 1


async def test_loop_child_without_answer_raises_in_the_parent_cell(run: Run) -> None:
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


async def test_loop_context_reassignment_is_restored_and_reported(run: Run) -> None:
    entries = [
        root(code("context = 'oops'\nprint(len(context))")),
        root(code("answer['content'] = str(len(context))\nanswer['ready'] = True")),
    ]
    result = await run(entries, "How long is the context?", "x" * 1234)
    assert result.answer == "1234"
    assert "restored" in run.last_user(1)


@pytest.mark.parametrize(
    ("final_line", "expected"),
    [("FINAL_VAR(total)", "6"), ("FINAL(total * 2)", "12"), ('FINAL("six")', "six")],
)
async def test_loop_final_in_prose(run: Run, final_line: str, expected: str) -> None:
    entries = [
        root(code("total = sum([1, 2, 3])\nprint(total)")),
        root(f"The total is computed.\n{final_line}"),
    ]
    result = await run(entries, "Sum it.", "ctx")
    assert (result.answer, result.ready, result.stop_reason) == (expected, True, "final")
    assert result.iterations == 2
    assert run.of_type("cell")[-1]["kind"] == (
        "code" if final_line.startswith('FINAL("') else "final"
    )


async def test_loop_final_with_unevaluable_text_is_the_answer(run: Run) -> None:
    result = await run([root("I checked every row.\nFINAL(the blue one, clearly)")], "q", "c")
    assert (result.answer, result.ready, result.stop_reason) == (
        "the blue one, clearly",
        True,
        "final",
    )
    assert run.of_type("cell") == []


async def test_loop_final_var_of_missing_variable_is_reported_to_the_model(run: Run) -> None:
    entries = [root("FINAL_VAR(nothing_here)"), root(done("ok"))]
    result = await run(entries, "q", "ctx")
    assert result.answer == "ok" and result.iterations == 2
    assert "no variable `nothing_here`" in run.last_user(1)
    assert [n["reason"] for n in run.of_type("nudge")] == ["final_var_missing"]


async def test_loop_reply_without_code_gets_a_nudge(run: Run) -> None:
    entries = [
        root("I would start by thinking about the problem in general terms. " * 10),
        root(code("print(context[:5])")),
        root("The answer is blue."),
        root(done("blue")),
    ]
    result = await run(entries, "What colour?", "blue sky")
    assert result.answer == "blue" and result.ready and result.iterations == 4
    assert run.last_user(1) == prompts.FRONTIER.no_code_nudge()
    assert run.last_user(3) == prompts.FRONTIER.prose_answer_nudge()
    assert [n["reason"] for n in run.of_type("nudge")] == ["no_code", "prose_answer"]
    # Turns alternate: every assistant reply is followed by a user message.
    roles = [m["role"] for m in run.root_requests()[3]["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]


async def test_loop_empty_reply_stays_a_visible_turn(run: Run) -> None:
    result = await run([root(""), root(done("x"))], "q", "ctx")
    assert result.answer == "x" and result.iterations == 2
    messages = run.root_requests()[1]["messages"]
    assert messages[2] == {"role": "assistant", "content": "(empty reply)"}


async def test_loop_repeated_cell_is_not_run_again_and_the_model_is_told(run: Run) -> None:
    probe = "counter = globals().get('counter', 0) + 1\nprint('run', counter)"
    entries = [
        root(code(probe)),
        # The same cell in a different reply (an identical reply is a repeated_reply).
        root(code(probe, before="Once more.")),
        root(code("answer['content'] = str(counter)\nanswer['ready'] = True")),
    ]
    result = await run(entries, "q", "ctx")
    assert result.answer == "1" and result.ready
    assert len(run.of_type("cell")) == 2
    assert [n["reason"] for n in run.of_type("nudge")] == ["repeated_code"]
    assert prompts.FRONTIER.repeated_code_note() in run.last_user(2)


async def test_loop_small_profile_is_told_how_little_a_slice_showed(run: Run) -> None:
    context = "filler line\n" * 500 + "the key is 42\n"
    entries = [
        root(code("print(context[:100])")),
        root(code("import re\nprint(re.findall(r'key is (\\d+)', context))")),
        root(done("42")),
    ]
    result = await run(entries, "What is the key?", context, profile="small")
    assert result.answer == "42" and result.ready
    assert [n["reason"] for n in run.of_type("nudge")] == ["partial_view"]
    assert f"only 100 of the {len(context):,} characters" in run.last_user(1)
    assert "Do NOT answer yet" in run.last_user(1)
    assert "If the output above contains the answer" in run.last_user(2)  # a search: as usual
    assert run.root_requests()[0]["messages"][0]["content"].count("WORKED EXAMPLE") == 1


async def test_loop_cell_error_is_shown_and_the_run_goes_on(run: Run) -> None:
    entries = [root(code("1 / 0")), root(code("def broken(:\n    pass")), root(done("fine"))]
    result = await run(entries, "q", "ctx")
    assert result.answer == "fine" and result.ready
    first, second, _ = run.of_type("cell")
    assert first["error"].startswith("ZeroDivisionError") and "ZeroDivisionError" in first["output"]
    assert second["error"].startswith("SyntaxError")
    assert "ZeroDivisionError" in run.last_user(1)


async def test_loop_long_output_is_cut_in_the_middle_for_the_model(run: Run) -> None:
    entries = [root(code("print('HEAD' + 'x' * 5000 + 'TAIL')")), root(done("ok"))]
    await run(entries, "q", "ctx", output_max_chars=500)
    output = run.of_type("cell")[0]["output"]
    assert len(output) <= 500
    assert output.startswith("HEAD") and output.endswith("TAIL")
    assert "characters dropped" in output and output in run.last_user(1)


@pytest.mark.parametrize(
    ("profile", "limit", "shown"),
    [("small", 8000, 4000), ("small", 1000, 1000), ("frontier", 8000, 8000)],
)
async def test_loop_output_is_cut_at_the_lower_of_the_limit_and_the_profiles_cap(
    run: Run, profile: str, limit: int, shown: int
) -> None:
    entries = [root(code("print('HEAD' + 'x' * 20000 + 'TAIL')")), root(done("ok"))]
    await run(entries, "q", "ctx", profile=profile, output_max_chars=limit)
    output = run.of_type("cell")[0]["output"]
    assert shown - 100 < len(output) <= shown
    assert output.startswith("HEAD") and output.endswith("TAIL")
    system = run.root_requests()[0]["messages"][0]["content"]
    assert f"you see at most {shown:,} characters of each cell's output" in system


async def test_loop_prose_answer_is_not_accepted_silently_at_the_limit(run: Run) -> None:
    entries = [root(code("print(len(context))")), root("The answer is 8.")]
    result = await run(entries, "How long?", "12345678", max_iterations=2)
    assert (result.answer, result.ready, result.stop_reason) == (
        "The answer is 8.",
        False,
        "max_iterations",
    )


async def test_loop_answer_given_as_plain_value_is_kept_as_the_partial_answer(run: Run) -> None:
    entries = [root(code("answer = 'forty-two'"))]
    result = await run(entries, "q", "ctx", max_iterations=1)
    assert (result.answer, result.ready) == ("forty-two", False)
    assert "must stay a dict" in run.of_type("cell")[0]["output"]


async def test_loop_cell_timeout_keeps_kernel_state(run: Run) -> None:
    entries = [root(code(SPIN)), root(code("answer['content'] = str(x)\nanswer['ready'] = True"))]
    result = await run(entries, "q", "ctx", cell_timeout_s=0.5)
    assert result.answer == "7" and result.ready
    assert run.of_type("cell")[0]["timed_out"] is True
    assert "longer than 0.5 s and was interrupted" in run.last_user(1)
    assert "cells are stopped after 0.5 s" in run.last_user(1)


async def test_loop_kernel_death_ends_the_run_with_the_reason(run: Run) -> None:
    stubborn = (
        "answer['content'] = 'so far'\nwhile True:\n    try:\n        while True:\n"
        "            pass\n    except KeyboardInterrupt:\n        pass"
    )
    result = await run([root(code(stubborn))], "q", "ctx", cell_timeout_s=0.5)
    assert (result.stop_reason, result.ready) == ("error", False)
    assert result.error is not None and "kept running" in result.error
    assert run.events[-1]["type"] == "run_end" and run.events[-1]["stop_reason"] == "error"


async def test_loop_max_iterations_returns_partial_answer(run: Run) -> None:
    entries = [root(code("answer['content'] = 'partial'\nprint('working')"), repeat=True)]
    result = await run(entries, "q", "ctx", max_iterations=3)
    assert (result.answer, result.ready, result.stop_reason) == ("partial", False, "max_iterations")
    assert result.iterations == 3 and len(run.root_requests()) == 3


async def test_loop_max_tokens(run: Run) -> None:
    entries = [root(code("print(1)"), repeat=True, prompt_tokens=900, completion_tokens=100)]
    result = await run(entries, "q", "ctx", max_tokens=2500)
    assert result.stop_reason == "max_tokens" and not result.ready
    assert len(run.root_requests()) == 3 and result.usage_total.total_tokens == 3000


async def test_loop_max_cost(run: Run, tmp_path: Path) -> None:
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
    async with Engine(config, backend=run.backend) as engine:
        result = await engine.run("q", "ctx")
    run.events = read_trajectory(run.trajectory)
    assert result.stop_reason == "max_cost" and not result.ready
    assert result.iterations == 2
    assert 0.25 <= result.usage_total.cost_usd < 0.5


async def test_loop_max_sub_calls_refuses_extra_items_and_stops(run: Run) -> None:
    entries = [
        root(code("r = llm_batch(['a', 'b', 'c', 'd'])\nprint(r)")),
        sub(None, "fine", repeat=True),
    ]
    result = await run(entries, "q", "ctx", max_sub_calls=2)
    assert result.stop_reason == "max_sub_calls" and result.sub_calls == 2
    (cell,) = run.of_type("cell")
    assert cell["output"].count("'fine'") == 2
    assert cell["output"].count("[ERROR] sub-call budget of 2 calls used up") == 2
    assert len(run.root_requests()) == 1


async def test_loop_budget_exhausted_is_raised_in_the_cell_for_llm_query(run: Run) -> None:
    probe = (
        "for i in range(3):\n    try:\n        print(llm_query(f'q{i}'))\n"
        "    except Exception as exc:\n        print(type(exc).__name__, exc)"
    )
    entries = [root(code(probe)), sub(None, "ok", repeat=True)]
    result = await run(entries, "q", "ctx", max_sub_calls=1)
    output = run.of_type("cell")[0]["output"]
    assert output.count("BudgetExhausted") == 2 and result.stop_reason == "max_sub_calls"


async def test_loop_max_wall_time_cancels_a_running_cell(run: Run) -> None:
    result = await run([root(code(SPIN))], "q", "ctx", max_wall_time_s=1, cell_timeout_s=100)
    assert result.stop_reason == "max_wall_time" and not result.ready
    assert run.events[-1]["stop_reason"] == "max_wall_time"


async def test_loop_sandbox_code_cannot_pick_an_unconfigured_model(run: Run) -> None:
    await sandbox_code_cannot_pick_an_unconfigured_model(run)


async def test_loop_sub_call_failure_inside_a_batch(run: Run) -> None:
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
    assert sorted(s["status"] for s in run.of_type("sub_call")) == ["error", "ok", "ok"]
    output = run.of_type("cell")[0]["output"]
    assert "'ONE'" in output and "[ERROR]" in output and "'THREE'" in output


async def test_loop_old_outputs_are_elided_to_fit_the_window(run: Run) -> None:
    big = code("print('A' * 6000)")
    entries = [root(big), root(code("print('B' * 6000)")), root(done("ok"))]
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        config = run.config(server)
        small_root = ModelSpec(
            "openai/root", api_base=server.base_url, api_key="x", context_window=4000
        )
        # Without compaction (tests/test_loop_compaction.py): eliding is what is left.
        config = EngineConfig(**{**config.__dict__, "model": small_root, "max_compactions": 0})
        async with Engine(config, backend=run.backend) as engine:
            result = await engine.run("q", "ctx")
    run.events = read_trajectory(run.trajectory)
    assert result.answer == "ok"
    third = [m["content"] for m in run.root_requests()[2]["messages"]]
    assert "[output of an earlier turn omitted to fit the context window]" in third
    assert "B" * 6000 in third[-1]
    # The trajectory keeps everything.
    assert "A" * 6000 in run.of_type("cell")[0]["output"]


async def test_loop_record_then_replay_gives_the_same_run(run: Run, tmp_path: Path) -> None:
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
        async with Engine(config, backend=run.backend) as engine:
            first = await engine.run("Shout the words.", "a b c")
    assert first.answer == "A B C"
    assert len(recorded.read_text().splitlines()) == 4
    config = EngineConfig(
        model=ModelSpec("openai/root", api_base="http://127.0.0.1:9/v1"),
        sub_model=ModelSpec("openai/sub"),
        replay=recorded,
        trajectory_path=run.trajectory,
    )
    async with Engine(config, backend=run.backend) as engine:
        second = await engine.run("Shout the words.", "a b c")
    run.events = read_trajectory(run.trajectory)
    assert (second.answer, second.ready, second.sub_calls) == ("A B C", True, 3)


async def test_loop_cancelling_a_run_records_it(run: Run) -> None:
    async with ReplayServer(Cassette([root(code(SPIN))])) as server:
        config = run.config(server)
        async with Engine(config, backend=run.backend) as engine:
            with anyio.move_on_after(60) as scope:
                async with anyio.create_task_group() as group:

                    def watch(event: dict[str, Any]) -> None:
                        if event["type"] == "turn":
                            group.cancel_scope.cancel()

                    group.start_soon(engine.run, "q", "ctx", watch)
    assert not scope.cancelled_caught
    run.events = read_trajectory(run.trajectory)
    assert run.events[-1]["type"] == "run_end"
    assert run.events[-1]["stop_reason"] == "cancelled"


async def test_sub_call_waits_do_not_count_toward_the_cell_timeout(run: Run) -> None:
    await sub_call_waits_do_not_count_toward_the_cell_timeout(run)


async def test_llm_map_with_choices_counts_labels(run: Run) -> None:
    await llm_map_with_choices_counts_labels(run)
