"""Sessions: several queries on one live kernel (the in-process fake sandbox, scripted models
from the replay server over real HTTP); ``pytest -k loop`` selects them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.models import Cassette, ReplayServer
from engine.rlm.trajectory import read_trajectory
from engine.sandbox.fake import FakeBackend
from tests.loop_support import Run, code

pytestmark = pytest.mark.anyio


def reply_to(tag: str, content: str, *, repeat: bool = False) -> dict[str, Any]:
    """A root reply to the request whose last user message contains ``tag``."""
    return {
        "match": {"model": "root", "contains": tag},
        "response": {"content": content},
        "repeat": repeat,
    }


def first_user(request: dict[str, Any]) -> str:
    return str(next(m["content"] for m in request["messages"] if m["role"] == "user"))


async def test_loop_session_keeps_variables_and_tells_later_queries_about_earlier_ones(
    tmp_path: Path,
) -> None:
    entries = [
        reply_to(
            "FIRST-Q",
            code(
                "rows = [l for l in context.splitlines() if 'ERROR' in l]\n"
                "answer['content'] = f'{len(rows)} error rows'\nanswer['ready'] = True"
            ),
        ),
        # Runs only if `rows` from the first query is still in the kernel.
        reply_to(
            "SECOND-Q",
            code("answer['content'] = rows[-1].split()[-1]\nanswer['ready'] = True"),
        ),
    ]
    context = "\n".join(
        f"line {i} ERROR code-{i}" if i % 10 == 3 else f"line {i} ok" for i in range(50)
    )
    run = Run(tmp_path, FakeBackend())
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        async with (
            Engine(run.config(server, max_iterations=3), backend=run.backend) as engine,
            engine.session(context) as session,
        ):
            first = await session.ask("FIRST-Q how many error rows?")
            second = await session.ask("SECOND-Q which code has the last error row?")
            variables = session.variables
    assert (first.answer, first.ready) == ("5 error rows", True)
    assert (second.answer, second.ready) == ("code-43", True)
    # One kernel for both queries.
    assert run.backend is not None and len(run.backend.opened) == 1  # type: ignore[attr-defined]
    assert [t.query for t in session.turns] == [
        "FIRST-Q how many error rows?",
        "SECOND-Q which code has the last error row?",
    ]
    assert variables["rows"] == "list, len 5"
    requests = run.root_requests()
    assert "earlier" not in first_user(requests[0])
    later = first_user(requests[1])
    assert "1 earlier query ran on this same kernel" in later
    assert "Q: FIRST-Q how many error rows?" in later and "A: 5 error rows" in later
    assert "rows (list, len 5)" in later
    # An account, not the transcript: the first query's code is not repeated.
    assert "for l in context" not in json.dumps(requests[1]["messages"])
    # Each query has its own trajectory, marked with the session and its turn.
    paths = sorted(tmp_path.glob("trajectory.*.jsonl"))
    assert [p.name for p in paths] == ["trajectory.1.jsonl", "trajectory.2.jsonl"]
    starts = [read_trajectory(p)[0] for p in paths]
    assert [s["session"] for s in starts] == [
        {"id": session.id, "turn": 1},
        {"id": session.id, "turn": 2},
    ]


async def test_loop_session_answer_is_reset_between_queries(tmp_path: Path) -> None:
    entries = [
        reply_to("ONE-Q", code("answer['content'] = 'one'\nanswer['ready'] = True")),
        # The second query only prints: an answer left over from the first must not end it.
        reply_to("TWO-Q", code("print('looking')")),
        {"match": {"model": "root"}, "response": {"content": code("print('still')")}},
    ]
    run = Run(tmp_path, FakeBackend())
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        async with (
            Engine(run.config(server, max_iterations=2), backend=run.backend) as engine,
            engine.session("some text") as session,
        ):
            assert (await session.ask("ONE-Q")).ready
            second = await session.ask("TWO-Q")
    assert not second.ready and second.stop_reason == "max_iterations"
    assert second.answer != "one"


async def test_loop_session_starts_a_fresh_kernel_when_the_old_one_died(tmp_path: Path) -> None:
    stubborn = (
        "import time\nx = 1\nfor _ in range(40):\n    try:\n        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n        pass"
    )
    entries = [
        reply_to("HANG-Q", code(stubborn)),
        reply_to("AFTER-Q", code("answer['content'] = str('x' in globals())\nanswer['ready'] = 1")),
        reply_to(
            "AFTER-Q", code("answer['content'] = str('x' in globals())\nanswer['ready'] = True")
        ),
    ]
    run = Run(tmp_path, FakeBackend(interrupt_grace_s=0.2))
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        config = run.config(server, max_iterations=2, cell_timeout_s=0.3)
        async with (
            Engine(config, backend=run.backend) as engine,
            engine.session("text") as session,
        ):
            died = await session.ask("HANG-Q")
            after = await session.ask("AFTER-Q")
    assert died.stop_reason == "error" and "kernel died" in (died.error or "")
    assert after.answer == "False"  # the variable of the dead kernel is gone
    assert len(run.backend.opened) == 2  # type: ignore[union-attr]
    assert "started again with the same context" in session.turns[1].kernel_note
    told = first_user(run.root_requests()[-1])
    assert "the variables of earlier queries are gone" in told
