"""Attack: a tenant's output schema whose ``pattern`` backtracks for hours on the answer.

A service job's ``output_schema`` is the tenant's, and the answer it is checked against is
the model's (which the tenant steers through the query and context). Python's regex engine
cannot be interrupted, so in the orchestrator's process ``^(a+)+$`` against 40 characters
would freeze its event loop (every tenant's jobs) for hours. The check runs in a process
of its own, killed at a deadline; the event loop must keep running meanwhile.
"""

from __future__ import annotations

import itertools
import json
import time

import anyio
import pytest

from engine.rlm.answer_schema import AnswerSchema
from tests.attacks.conftest import AttackReport, RssMeter

pytestmark = pytest.mark.anyio

DEADLINE_S = 2.0  # the service's is CHECK_TIMEOUT_S (10 s)


async def test_backtracking_pattern_in_the_output_schema(
    rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    schema = AnswerSchema({"type": "string", "pattern": "^(a+)+$"})
    ticks: list[float] = []

    async def event_loop_ticks() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as group:
        group.start_soon(event_loop_ticks)
        verdict = await schema.check_isolated(json.dumps("a" * 40 + "b"), timeout_s=DEADLINE_S)
        group.cancel_scope.cancel()
    assert verdict.answer is None and verdict.problem is not None
    assert "took longer" in verdict.problem
    # A check on the event loop would have blocked it for the whole deadline: no tick
    # between the first and the verdict.
    assert len(ticks) > 2, ticks
    longest_stall = max(b - a for a, b in itertools.pairwise(ticks))
    attack_report(
        "output schema pattern ^(a+)+$ against a 41-character answer (hours of backtracking)",
        f"schema checked in its own process, killed after the deadline (here {DEADLINE_S:g} s; "
        "10 s in runs)",
        f"answer refused ('took longer than {DEADLINE_S:g} s'); the event loop never stalled "
        f"more than {longest_stall:.2f} s",
        rss_growth=rss_meter.growth(),
    )
