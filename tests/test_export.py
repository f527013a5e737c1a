"""``rlm export``: a recorded run (real sandbox, replayed models) round-trips into training data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, EngineConfig, Limits
from engine.export import runs_from_events, to_rollout, to_sft
from engine.export.runs import ExportError
from engine.models import Cassette, ModelSpec, ReplayServer
from engine.rlm.trajectory import read_trajectory

REPO = Path(__file__).resolve().parents[1]


def _fence(source: str) -> str:
    return f"Let me look.\n```repl\n{source}\n```\n"


CASSETTE = [
    {
        "match": {"model": "root", "contains": "CELL-1-OUT"},
        "response": {
            "content": _fence('answer["content"] = llm_query("name it")\nanswer["ready"] = True')
        },
    },
    {
        "match": {"model": "root"},
        "response": {"content": _fence('print("CELL-1-OUT", len(context))')},
    },
    {"match": {"model": "sub"}, "response": {"content": "Ada"}, "repeat": True},
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """One real run: its trajectory and the root requests the model server received."""
    import anyio

    tmp = tmp_path_factory.mktemp("export")
    trajectory = tmp / "run.jsonl"

    async def run() -> list[dict[str, Any]]:
        async with ReplayServer(Cassette(CASSETTE)) as server:
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
                limits=Limits(max_iterations=4),
                trajectory_path=trajectory,
            )
            async with Engine(config) as engine:
                result = await engine.run("Who is named?", "a context about Ada " * 20)
            assert result.ready and result.answer == "Ada"
            return [r for r in server.requests if r["model"] == "root"]

    return trajectory, anyio.run(run)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_sft_is_the_conversation_the_model_had(recorded: tuple[Path, list[dict[str, Any]]]) -> None:
    trajectory, requests = recorded
    (run,) = runs_from_events(read_trajectory(trajectory), source="t")
    (line,) = to_sft(run, score=None, source="t")
    last_request = requests[-1]["messages"]
    # What the model was sent last, plus its final reply, is exactly the exported chat.
    assert line["messages"][: len(last_request)] == last_request
    assert line["messages"][-1]["role"] == "assistant"
    assert 'answer["ready"] = True' in line["messages"][-1]["content"]
    assert [m["role"] for m in line["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert line["metadata"]["stop_reason"] == "answer" and line["metadata"]["ready"]
    with_subs = to_sft(run, score=None, source="t", sub_calls=True)
    assert with_subs[1]["messages"] == [
        {"role": "user", "content": "name it"},
        {"role": "assistant", "content": "Ada"},
    ]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_rollout_rewards_and_turns(recorded: tuple[Path, list[dict[str, Any]]]) -> None:
    trajectory, _ = recorded
    (run,) = runs_from_events(read_trajectory(trajectory), source="t")
    rollout = to_rollout(run, score=0.5, source="t")
    assert rollout is not None
    assert [m["role"] for m in rollout["prompt"]] == ["system", "user"]
    assert [m["role"] for m in rollout["completion"]] == ["assistant", "user", "assistant"]
    assert rollout["reward"] == 0.5 and rollout["turn_rewards"] == [0.0, 0.5]
    assert rollout["turns"][1]["answer_ready"] and rollout["answer"] == "Ada"
    unscored = to_rollout(run, score=None, source="t")
    assert unscored is not None and unscored["reward"] == 1.0


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_cli_filters_and_eval_scores(
    recorded: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    trajectory, _ = recorded
    results = tmp_path / "eval" / "results.jsonl"
    results.parent.mkdir()
    line = {"key": "item-1", "method": "rlm", "score": 0.25, "trajectory_path": str(trajectory)}
    results.write_text(json.dumps(line) + "\n")

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "export", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )

    kept = export("--eval", str(results.parent), "--format", "rollout", "--min-score", "0.2")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["reward"] == 0.25
    dropped = export("--eval", str(results.parent), "--min-score", "0.3")
    assert dropped.stdout == "" and "1 skipped (score)" in dropped.stderr
    other = export(str(trajectory), "--stop-reason", "max_iterations")
    assert other.stdout == "" and "skipped (stop reason)" in other.stderr
    missing = export(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_old_trajectories_are_refused_clearly() -> None:
    events = [
        {"id": 1, "parent_id": None, "type": "run_start", "task_id": "t", "depth": 1},
        {"id": 2, "parent_id": 1, "type": "turn", "iteration": 1, "reply": "hi"},
    ]
    with pytest.raises(ExportError, match="predates"):
        runs_from_events(events, source="old.jsonl")


def test_sub_calls_belong_to_their_run_though_written_before_their_cell() -> None:
    events = [
        {"id": 1, "parent_id": None, "type": "run_start", "task_id": "t", "depth": 1, "query": "q"},
        {"id": 2, "parent_id": 1, "type": "turn", "iteration": 1, "messages": [], "reply": "r"},
        {
            "id": 4,
            "parent_id": 3,
            "type": "sub_call",
            "kind": "llm_query",
            "prompt": "p",
            "response": "x",
            "status": "ok",
        },
        {"id": 3, "parent_id": 2, "type": "cell", "error": None, "answer_ready": False},
        {
            "id": 5,
            "parent_id": 1,
            "type": "run_end",
            "answer": "",
            "ready": False,
            "stop_reason": "max_iterations",
        },
    ]
    (run,) = runs_from_events(events, source="s")
    assert [c.prompt for c in run.sub_calls] == ["p"]
    assert run.stop_reason == "max_iterations" and not run.ready
