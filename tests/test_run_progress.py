"""``rlm run``'s status: turns, sub-calls, tokens and cost, live on a terminal, lines in a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from engine.cli.status import RunState, RunStatus

ROOT = Path(__file__).resolve().parents[1]

# A run whose root turn 2 spawns a child RLM (depth 2) that makes one llm_query.
EVENTS: list[dict[str, object]] = [
    {"type": "run_start", "depth": 1, "limits": {"max_iterations": 20}},
    {"type": "sandbox_ready", "depth": 1, "startup_s": 0.84},
    {"type": "turn", "depth": 1, "iteration": 1, "usage": {"total_tokens": 900, "cost_usd": 0.01}},
    {"type": "cell", "depth": 1, "iteration": 1, "duration_s": 0.25, "error": None},
    {"type": "turn", "depth": 1, "iteration": 2, "usage": {"total_tokens": 1200, "cost_usd": 0.02}},
    {"type": "run_start", "depth": 2, "limits": {"max_iterations": 5}},
    {"type": "turn", "depth": 2, "iteration": 1, "usage": {"total_tokens": 300, "cost_usd": 0.001}},
    {"type": "sub_call", "depth": 2, "kind": "llm_query", "usage": {"total_tokens": 50}},
    {"type": "cell", "depth": 2, "iteration": 1, "duration_s": 0.1, "error": None},
    {"type": "run_end", "depth": 2, "stop_reason": "answer"},
    {"type": "sub_call", "depth": 1, "kind": "rlm_query"},
    {"type": "cell", "depth": 1, "iteration": 2, "duration_s": 3.0, "error": "ValueError: x"},
    {"type": "nudge", "depth": 1, "iteration": 2, "reason": "partial_view"},
    {"type": "run_end", "depth": 1, "stop_reason": "max_iterations"},
]


def test_state_counts_the_whole_tree_and_follows_the_root() -> None:
    state = RunState()
    steps = [state.apply(event) for event in EVENTS]
    # Lines in plain mode: sandbox ready, each root cell, the nudge and the end; not the
    # child's events, not the model turns (their cell follows), not sub-calls.
    lines = [i for i, step in enumerate(steps) if step]
    assert lines == [1, 3, 11, 12, 13]
    assert state.turns == "2/20"  # the child's own limit of 5 does not replace the root's
    assert state.sub_calls == 2
    assert state.tokens == 900 + 1200 + 300 + 50
    assert state.cost_usd == pytest.approx(0.031)
    assert state.line() == (
        "turn 2/20 | done (max_iterations) | sub-calls 2 | tokens 2,450 | $0.0310"
    )


def test_state_of_a_malformed_event_stream_does_not_raise() -> None:
    state = RunState()
    for event in ({}, {"type": "turn"}, {"type": "cell", "depth": 1}, {"type": "sub_call"}):
        state.apply(event)
    assert state.line() == "turn 0 | cell ok (0.0s) | sub-calls 1 | tokens 0 | $0.0000"


def test_live_status_on_a_terminal() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system="standard")
    status = RunStatus(console)
    for event in EVENTS:
        status(event)
    status.close()
    output = screen.getvalue()
    assert "\x1b[?25l" in output  # the cursor is hidden while the line is redrawn in place
    final = output.rsplit("\r", 1)[-1]
    for part in ("turn 2/20", "done (max_iterations)", "sub-calls 2", "tokens 2,450", "$0.0310"):
        assert part in final, (part, final)


# --- the real command -----------------------------------------------------------------------

SOLVE = "```repl\nanswer['content'] = str(context.count('b'))\nanswer['ready'] = True\n```"


def _rlm_run(tmp: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "ctx.txt").write_text("abcabcabb")
    cassette = tmp / "c.jsonl"
    line = {"match": {"model": "root"}, "response": {"content": SOLVE}}
    cassette.write_text(json.dumps(line) + "\n")
    drop = {"TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RLM_")}
    env |= {"PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env_extra}
    if "RLM_SANDBOX_IMAGE" in os.environ:
        env["RLM_SANDBOX_IMAGE"] = os.environ["RLM_SANDBOX_IMAGE"]
    command = [sys.executable, "-m", "engine.cli.main", "run", "--context", str(tmp / "ctx.txt")]
    command += ["--query", "how many b?", "--model", "openai/root", "--replay", str(cassette)]
    return subprocess.run(
        command,
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_rlm_run_prints_plain_lines_into_a_pipe(tmp_path: Path) -> None:
    done = _rlm_run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "4\n"
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("rlm: turn ")]
    assert len(lines) == 3, done.stderr
    assert lines[0].startswith("rlm: turn 0/20 | sandbox ready in ")
    assert lines[1].startswith("rlm: turn 1/20 | cell ok (")
    assert lines[2].startswith("rlm: turn 1/20 | done (answer) | sub-calls 0 | tokens ")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_rlm_run_draws_a_live_status_when_told_the_pipe_is_a_terminal(tmp_path: Path) -> None:
    done = _rlm_run(tmp_path, TTY_COMPATIBLE="1", COLUMNS="160")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "4\n"
    assert "\x1b[?25l" in done.stderr
    assert "rlm: turn" not in done.stderr
    final = done.stderr.rsplit("\r", 1)[-1]
    assert "turn 1/20" in final and "done (answer)" in final and "sub-calls 0" in final
