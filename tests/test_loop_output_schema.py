"""Structured answers: the root loop validates the final answer against a JSON Schema.

Behaviour tests on the in-process fake sandbox (no Docker) with scripted replies from the
replay server over real HTTP; ``pytest -k loop`` selects them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, RunResult
from engine.errors import ConfigError
from engine.models import Cassette, ReplayServer
from engine.rlm.answer_schema import AnswerSchema
from engine.rlm.trajectory import read_trajectory
from engine.sandbox.fake import FakeBackend
from tests.loop_support import Run, code, root

pytestmark = pytest.mark.anyio

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def answer_cell(expression: str) -> str:
    return code(f"import json\nanswer['content'] = {expression}\nanswer['ready'] = True")


async def run_with_schema(
    tmp_path: Path, entries: list[dict[str, Any]], schema: Any = SCHEMA
) -> tuple[RunResult, Run]:
    run = Run(tmp_path, FakeBackend(interrupt_grace_s=1.0))
    async with ReplayServer(Cassette(entries)) as server:
        run.server = server
        async with Engine(run.config(server, max_iterations=4), backend=run.backend) as engine:
            run.result = await engine.run(
                "Which city?", "Paris has 2 million people.", output_schema=schema
            )
    run.events = read_trajectory(run.trajectory)
    return run.result, run


async def test_loop_sends_an_invalid_structured_answer_back_with_its_errors(tmp_path: Path) -> None:
    entries = [
        root(answer_cell("json.dumps({'city': 3})")),
        root(answer_cell("json.dumps({'city': 'Paris', 'population': 2})")),
    ]
    result, run = await run_with_schema(tmp_path, entries)
    assert result.ready and result.iterations == 2
    assert result.answer_json == {"city": "Paris", "population": 2}
    assert json.loads(result.answer) == result.answer_json
    first_user = run.root_requests()[0]["messages"][1]["content"]
    assert "JSON Schema" in first_user and '"population"' in first_user
    feedback = run.last_user(1)
    assert "does not match the output schema" in feedback
    assert "city: 3 is not of type 'string'" in feedback
    assert "'population' is a required property" in feedback
    assert [n["reason"] for n in run.of_type("nudge")] == ["answer_invalid"]


async def test_loop_refuses_an_answer_that_is_not_json(tmp_path: Path) -> None:
    entries = [
        root(answer_cell("'Paris, 2 million'")),
        root(answer_cell("'still prose'"), repeat=True),
    ]
    result, run = await run_with_schema(tmp_path, entries)
    assert not result.ready and result.answer_json is None
    assert result.stop_reason == "max_iterations"
    assert "it is not JSON" in run.last_user(1)


async def test_loop_accepts_a_python_literal_as_the_structured_answer(tmp_path: Path) -> None:
    result, _ = await run_with_schema(
        tmp_path, [root(answer_cell("str({'city': 'Paris', 'population': 2})"))]
    )
    assert result.ready and result.answer_json == {"city": "Paris", "population": 2}
    assert result.answer == '{"city": "Paris", "population": 2}'


async def test_loop_checks_a_final_in_prose_against_the_schema(tmp_path: Path) -> None:
    entries = [
        root('I am sure.\nFINAL("Paris")'),
        root("""FINAL('{"city": "Paris", "population": 2}')"""),
    ]
    result, run = await run_with_schema(tmp_path, entries)
    assert result.ready and result.answer_json == {"city": "Paris", "population": 2}
    assert "it is not JSON" in run.last_user(1)


async def test_loop_without_a_schema_keeps_plain_answers(tmp_path: Path) -> None:
    result, _ = await run_with_schema(tmp_path, [root(answer_cell("'Paris'"))], schema=None)
    assert result.ready and result.answer == "Paris" and result.answer_json is None


async def test_loop_rejects_an_invalid_schema_before_running(tmp_path: Path) -> None:
    # Raised as it is: leaving the replay server's block never wraps it (AsyncResource).
    with pytest.raises(ConfigError, match="not a valid JSON Schema at type"):
        await run_with_schema(tmp_path, [root(answer_cell("'x'"))], schema={"type": "nope"})


def test_schema_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"schema\.json is not JSON"):
        AnswerSchema.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        AnswerSchema.from_file(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        AnswerSchema([1, 2])


@pytest.mark.parametrize(
    ("schema", "answer", "problem"),
    [
        # Exponential backtracking: hours for this 40-character string in Python's re.
        ({"type": "string", "pattern": "^(a+)+$"}, json.dumps("a" * 40 + "b"), "took longer"),
        ({"$ref": "#"}, "1", "recursed too deep"),
        ({"type": "array"}, "[" * 100_000 + "]" * 100_000, "recursed too deep"),
    ],
    ids=["backtracking-pattern", "self-reference", "deep-answer"],
)
async def test_a_hostile_schema_or_answer_is_checked_apart_and_refused(
    schema: dict[str, Any], answer: str, problem: str
) -> None:
    # The schema is a tenant's and the answer the model's: the check runs in a process of
    # its own, killed at the deadline, so neither can stall or crash the orchestrator.
    verdict = await AnswerSchema(schema).check_isolated(answer, timeout_s=2.0)
    assert verdict.answer is None and verdict.problem is not None
    assert problem in verdict.problem


async def test_the_isolated_check_gives_the_same_verdicts() -> None:
    schema = AnswerSchema(SCHEMA)
    good = await schema.check_isolated('{"city": "Oslo", "population": 709000}')
    assert good.answer == '{"city": "Oslo", "population": 709000}'
    assert good.value == {"city": "Oslo", "population": 709000}
    bad = await schema.check_isolated('{"city": "Oslo"}')
    assert bad.answer is None and bad.problem == schema.check('{"city": "Oslo"}').problem


def test_an_answer_nested_past_the_depth_limit_is_refused() -> None:
    schema = AnswerSchema({"type": "array"})
    assert schema.check("[" * 100 + "]" * 100).answer is not None
    deep = schema.check("[" * 101 + "]" * 101)
    assert deep.answer is None and deep.problem is not None and "100 levels" in deep.problem


def test_a_deep_schema_is_shown_to_the_root_without_indentation() -> None:
    # Indentation grows with depth: 5,000 leaves 850 levels deep (a 64 KiB schema) were
    # 5.9 MB of the root's first message; shown compact they stay the schema's size.
    schema: dict[str, object] = {f"b{i}": 1 for i in range(5000)}
    for _ in range(850):
        schema = {"a": schema}
    compact = len(json.dumps(schema))
    assert len(AnswerSchema(schema).instructions()) < compact + 1000
    shallow = AnswerSchema({"type": "object", "properties": {"x": {"type": "integer"}}})
    assert '\n "type": "object",\n' in shallow.instructions()  # small ones stay readable
