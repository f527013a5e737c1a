"""End-to-end runs: real Docker sandboxes, real bridge, replayed models.

What crosses the sandbox boundary is tested here (the bridge's HTTP, tokens, child sandboxes,
SIGINT, OOM, container clean-up); the loop's own behaviour is in ``test_loop_behaviour.py``,
on the in-process fake sandbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineConfig, RunResult
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm.trajectory import read_trajectory
from tests.conftest import engine_containers
from tests.loop_support import (
    Run,
    code,
    llm_batch_under_one_cell,
    llm_map_with_choices_counts_labels,
    rlm_query_child_one_level_down,
    root,
    sandbox_code_cannot_pick_an_unconfigured_model,
    sub_call_waits_do_not_count_toward_the_cell_timeout,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    runner = Run(tmp_path)  # the Docker backend
    yield runner
    # Every sandbox of the run (children too) must be gone once the run returns.
    leftovers = [n for n in engine_containers() if any(t in n for t in runner.task_ids())]
    assert leftovers == []
    assert runner.task_ids(), "the run wrote no run_start event"


async def test_grep_style_solve_in_one_cell(run: Run) -> None:
    context = "\n".join("ERROR x" if i % 7 == 0 else "INFO y" for i in range(500))
    reply = code(
        "n = sum('ERROR' in line for line in context.splitlines())\n"
        "answer['content'] = str(n)\nanswer['ready'] = True"
    )
    result = await run([root(reply)], "How many ERROR lines?", context)
    assert (result.answer, result.ready, result.stop_reason) == ("72", True, "answer")
    assert result.trajectory_path == run.trajectory
    (ready,) = run.of_type("sandbox_ready")
    assert ready["context"]["kind"] == "text" and ready["context"]["length_chars"] == len(context)
    # By default the engine starts one sandbox while it sets up, and the run claims it.
    assert ready["warm"] is True and ready["pool_miss"] is None


async def test_chunks_and_llm_batch(run: Run) -> None:
    await llm_batch_under_one_cell(run)  # over the real bridge


async def test_rlm_query_runs_a_child_in_its_own_sandbox(run: Run) -> None:
    depth = "import os\nprint('{} depth', os.environ['RLM_DEPTH'])\n"
    await rlm_query_child_one_level_down(run, depth.format("parent"), depth.format("child"))
    assert "child depth 2" in run.of_type("cell")[0]["output"]
    assert run.of_type("run_start")[1]["context_arg"]["kind"] == "path"
    # A run that may start children opens a warm pool: the top-level run claims the sandbox
    # it started while the engine set up (the child gets a warm or a cold one, by timing).
    top = next(e for e in run.of_type("sandbox_ready") if e["depth"] == 1)
    assert top["warm"] is True and top["pool_miss"] is None, top["pool_miss"]


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
    await sandbox_code_cannot_pick_an_unconfigured_model(run)  # refused over the real bridge


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


async def test_sub_call_waits_do_not_count_toward_the_cell_timeout(run: Run) -> None:
    await sub_call_waits_do_not_count_toward_the_cell_timeout(run)


async def test_llm_map_with_choices_counts_labels(run: Run) -> None:
    await llm_map_with_choices_counts_labels(run)
