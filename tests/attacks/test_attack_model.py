"""Attacks by the model provider (or a broken one): the replay server scripted as the attacker.

A provider's reply is read like anything else from outside: its size, its text, its token
counts and its timing. The engine keeps each bounded (``engine/models/client.py``): a reply
is cut at ``MAX_REPLY_CHARS``, lone surrogates become U+FFFD, negative counts count as 0, and
one deadline covers the whole call. The run goes on in a real sandbox and ends with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine import Engine
from engine.errors import ModelError
from engine.models import Cassette, ModelClient, ModelSpec, ReplayServer
from engine.models._litellm import load_litellm
from engine.models.client import MAX_REPLY_CHARS
from engine.models.scheduler import CallScheduler
from engine.rlm.trajectory import read_trajectory
from tests.attacks.conftest import AttackReport, RssMeter
from tests.loop_support import Run, code, root
from tests.service_support import rlm_command

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _litellm_loaded() -> None:
    # Imported on the first call otherwise: its 170 MiB would count as the attack's growth.
    load_litellm()


FLOOD_CHARS = 8 << 20
FLOOD_TURNS = 5
#: What the flood's trajectory may take: each turn holds its reply and sends it back once.
TRAJECTORY_CAP = 2 * FLOOD_TURNS * MAX_REPLY_CHARS + (1 << 20)


@contextmanager
def replay_process(entries: list[dict[str, Any]], folder: Path) -> Iterator[SimpleNamespace]:
    """``rlm replay serve`` in a process of its own: a provider's memory is not the
    orchestrator's (the in-process server also keeps every request it was sent)."""
    cassette = folder / "cassette.jsonl"
    cassette.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    proc = subprocess.Popen(
        rlm_command("replay", "serve", cassette), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield SimpleNamespace(base_url=proc.stdout.readline().strip())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_attack_model_reply_flood(tmp_path: Path, attack_report: AttackReport) -> None:
    # Prose without code: before the cap, every 8 MB reply stayed in the conversation and went
    # back with each later request (memory and trajectory grew by turns x size).
    flood = "Thinking about it. " + "x" * FLOOD_CHARS
    entries = [root(flood, repeat=True)]
    run = Run(tmp_path)
    with replay_process(entries, tmp_path) as server:
        config = run.config(server, max_iterations=FLOOD_TURNS)  # type: ignore[arg-type]
        async with Engine(config) as engine:
            # An innocent run first: the first sandbox and model call import their libraries.
            assert (await engine.run("Say hi", "ctx")).stop_reason == "max_iterations"
            meter = RssMeter(os.getpid()).start()
            result = await engine.run("What?", "ctx")
            growth = meter.growth()
    run.events = [e for e in read_trajectory(run.trajectory) if e["task_id"] == result.task_id]
    turns = run.of_type("turn")
    assert result.stop_reason == "max_iterations" and len(turns) == FLOOD_TURNS
    assert all(len(t["reply"]) <= MAX_REPLY_CHARS for t in turns)
    assert all(t["finish_reason"] == "length" for t in turns)
    written = run.trajectory.stat().st_size
    attack_report(
        f"the model answers {FLOOD_CHARS >> 20} MiB of prose every turn ({FLOOD_TURNS} turns)",
        f"a reply is cut at {MAX_REPLY_CHARS:,} characters (finish_reason length) before it "
        "enters the conversation or the trajectory",
        f"every reply cut to {MAX_REPLY_CHARS:,} characters; the run ended at max_iterations "
        "(before: 460 MiB of orchestrator growth and a 90 MB trajectory in 3 turns of 30 MB)",
        rss_growth=growth,
        host_bytes=written,
        host_cap=TRAJECTORY_CAP,
    )


#: Escaped lone surrogates and a NUL (valid JSON, not writable as UTF-8), tool calls of
#: garbage JSON, a <think> never closed, then the answer; the first reply claims negative
#: token counts (before: the run's count went to minus two billion, lifting max_tokens).
GARBAGE = [
    {
        "match": {"model": "root"},
        "response": {
            "content": "lone \ud800 and \udcff, a NUL \x00, done",
            "tool_calls": [{"id": "c1", "name": "nope\udfff", "arguments": "{{{not json"}],
            "usage": {"prompt_tokens": -(10**9), "completion_tokens": -(10**9)},
        },
    },
    {"match": {"model": "root"}, "response": {"content": "<think> and never closed " * 1000}},
    {
        "match": {"model": "root"},
        "response": {"content": code("answer['content'] = 'ok \\udcff'\nanswer['ready'] = True")},
    },
]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
async def test_attack_model_garbage_replies(tmp_path: Path, attack_report: AttackReport) -> None:
    run = Run(tmp_path)
    meter = RssMeter(os.getpid()).start()
    result = await run(GARBAGE, "What?", "ctx", max_iterations=4)
    growth = meter.growth()
    assert (result.answer, result.ready) == ("ok \ufffd", True)
    assert result.usage_root.prompt_tokens >= 0 and result.usage_root.completion_tokens >= 0
    replies = [t["reply"] for t in run.of_type("turn")]
    assert replies[0] == "lone \ufffd and \ufffd, a NUL \x00, done"
    # The whole trajectory is UTF-8 (the write of the first turn raised before).
    run.trajectory.read_bytes().decode("utf-8")
    attack_report(
        "replies with escaped lone surrogates, a NUL, garbage tool calls, an unclosed <think> "
        "and negative token counts",
        "replies made valid text (lone surrogates become U+FFFD) and counts never below 0",
        f"answered {result.answer!r} in {result.iterations} turns; usage "
        f"{result.usage_root.total_tokens:,} tokens (before: the run ended with a "
        "UnicodeEncodeError traceback, and counts of -2,000,000,000 tokens were summed)",
        rss_growth=growth,
    )


async def test_attack_model_never_finishes(attack_report: AttackReport) -> None:
    # A byte every 0.2 s resets httpx's read timeout for ever: litellm's timeout is per read.
    entries = [{"match": {}, "response": {"content": ""}, "trickle_s": 0.2, "repeat": True}]
    async with ReplayServer(Cassette(entries)) as server:
        client = ModelClient(CallScheduler(max_retries=1, backoff_base_s=0.1), timeout_s=1.0)
        spec = ModelSpec("openai/root", api_base=server.base_url, api_key="x")
        meter = RssMeter(os.getpid()).start()
        with pytest.raises(ModelError) as failed:
            await client.complete(spec, [{"role": "user", "content": "hi"}])
        growth = meter.growth()
    assert "did not answer in time after 2 attempts" in str(failed.value)
    assert len(server.requests) == 2
    attack_report(
        "a provider that sends one byte every 0.2 s and never finishes its reply",
        "one deadline for the whole model call (the client's timeout, 600 s by default), then "
        "the scheduler's retries",
        f"{type(failed.value).__name__} after 2 attempts of 1 s ('did not answer in time'); "
        "before: the call never ended",
        rss_growth=growth,
    )
