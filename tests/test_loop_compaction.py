"""Compaction: when the root's conversation nears its window, older turns become a note and
the full history goes to the kernel (the in-process fake sandbox, scripted models from the
replay server over real HTTP); ``pytest -k loop`` selects them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, RunResult
from engine.models import Cassette, ReplayServer
from engine.rlm.loop import needs_compaction
from engine.rlm.trajectory import read_trajectory
from engine.sandbox.fake import FakeBackend
from tests.loop_support import Run, code

pytestmark = pytest.mark.anyio

# The root's window in tokens: the system prompt and a few 3,000-character outputs fill it.
WINDOW = 4_000
SUMMARY = {
    "match": {"model": "root", "contains": "Summarise these earlier turns"},
    "response": {"content": "NOTE: turns printed blocks a, b and c; nothing found yet."},
    "repeat": True,
}


def step(letter: str) -> dict[str, Any]:
    return {
        "match": {"model": "root"},
        "response": {"content": code(f"print({letter!r} * 3000)")},
    }


async def run_long(tmp_path: Path, entries: list[dict[str, Any]], **config: Any) -> Run:
    run = Run(tmp_path, FakeBackend())
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        base = run.config(server, max_iterations=len(entries) - 1)  # SUMMARY: no turn
        model = dataclasses.replace(base.model, context_window=WINDOW)  # type: ignore[arg-type]
        engine_config = dataclasses.replace(base, model=model, **config)
        async with Engine(engine_config, backend=run.backend) as engine:
            run.result = await engine.run("LONG-TASK: find the block", "some context")
    run.events = read_trajectory(run.trajectory)
    return run


async def test_loop_compacts_older_turns_into_a_note_and_keeps_history_in_the_kernel(
    tmp_path: Path,
) -> None:
    final = code(
        "answer['content'] = f\"{len(history)} {history[3]['content'][:40]!r}\"\n"
        "answer['ready'] = True"
    )
    entries = [
        SUMMARY,
        *(step(c) for c in "abcde"),
        {"match": {"model": "root"}, "response": {"content": final}},
    ]
    run = await run_long(tmp_path, entries, max_compactions=1)
    result: RunResult | None = run.result
    assert result is not None and result.ready, result
    compactions = run.of_type("compaction")
    assert len(compactions) == 1
    event = compactions[0]
    assert event["status"] == "ok" and event["note"].startswith("NOTE:")
    assert event["chars_after"] < event["chars_before"]
    # The summary request held the older turns; the conversation after it holds the note.
    requests = run.root_requests()
    summary_index = next(
        i for i, r in enumerate(requests) if "Summarise these" in str(r["messages"][-1])
    )
    assert "aaaa" in requests[summary_index]["messages"][-1]["content"]
    after = requests[summary_index + 1]["messages"]
    assert "NOTE: turns printed" in after[1]["content"] and "`history`" in after[1]["content"]
    assert len(after) == 4
    # The kernel's history has every message as first sent (the 3rd: the first reply, the 4th
    # the output of block a).
    count, fourth = result.answer.split(" ", 1)
    assert int(count) >= 6 and "aaaa" in fourth
    # The trajectory still has the whole conversation for export (no note in the turn events).
    turn_messages = [m for t in run.of_type("turn") for m in t["messages"]]
    assert sum("aaaa" in m["content"] for m in turn_messages) == 1


async def test_loop_compactions_stop_at_the_cap(tmp_path: Path) -> None:
    entries = [SUMMARY, *(step(c) for c in "abcdefghij")]
    run = await run_long(tmp_path, entries, max_compactions=2)
    assert len(run.of_type("compaction")) == 2
    assert run.result is not None and run.result.stop_reason == "max_iterations"
    # Past the cap the oldest outputs are elided instead; every request still fits.
    for request in run.root_requests():
        chars = sum(len(m["content"]) for m in request["messages"])
        assert chars <= WINDOW * 3.5


async def test_loop_without_compaction_only_elides(tmp_path: Path) -> None:
    entries = [SUMMARY, *(step(c) for c in "abcdef")]
    run = await run_long(tmp_path, entries, max_compactions=0)
    assert run.of_type("compaction") == []
    assert not any("Summarise these" in str(r["messages"]) for r in run.root_requests())


def test_needs_compaction_counts_the_conversation_against_the_window() -> None:
    short = [{"role": "user", "content": "x" * 10}] * 6
    assert not needs_compaction(short, 1_000, 0.8)
    long = [{"role": "user", "content": "x" * 1_000}] * 6
    assert needs_compaction(long, 1_000, 0.8)
    assert not needs_compaction(long, None, 0.8)  # unknown window: never
    assert not needs_compaction(long[:4], 100, 0.8)  # nothing older than the last exchange
