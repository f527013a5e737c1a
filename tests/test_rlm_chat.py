"""``rlm chat`` as a user runs it: a real process with questions on standard input, a real
sandbox (one kernel for all questions), models replayed from a cassette."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import engine_containers
from tests.test_rlm_cli import rlm

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


def entry(contains: str, source: str) -> str:
    reply = f"```repl\n{source}\n```"
    match = {"model": "root", "contains": contains}
    return json.dumps({"match": match, "response": {"content": reply}, "repeat": True})


def test_chat_answers_questions_from_a_pipe_on_one_kernel(tmp_path: Path) -> None:
    (tmp_path / "ctx.txt").write_text("apple banana cherry banana")
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        "\n".join(
            [
                # First: the second question's prompt also names the first one (in the account).
                # `words` exists only if the kernel of the first question is still there.
                entry(
                    "COUNT-BANANA",
                    "answer['content'] = str(words.count('banana'))\nanswer['ready'] = True",
                ),
                entry(
                    "SPLIT-WORDS",
                    "words = context.split()\nanswer['content'] = str(len(words))\n"
                    "answer['ready'] = True",
                ),
            ]
        )
        + "\n"
    )
    questions = "SPLIT-WORDS how many words?\n\nCOUNT-BANANA how many bananas?\nexit\nignored\n"
    done = rlm(
        "chat", "--context", tmp_path / "ctx.txt", "--model", "openai/root", "--replay",
        cassette, "--trajectory", tmp_path / "t.jsonl", cwd=tmp_path, stdin=questions,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "4\n\n2\n\n"
    assert "Traceback" not in done.stderr
    first, second = (
        [json.loads(line) for line in (tmp_path / f"t.{n}.jsonl").read_text().splitlines()]
        for n in (1, 2)
    )
    session = first[0]["session"]["id"]
    assert second[0]["session"] == {"id": session, "turn": 2}
    assert not [name for name in engine_containers() if session in name]


def test_chat_refuses_stdin_as_the_context(tmp_path: Path) -> None:
    done = rlm("chat", "--context", "-", "--model", "openai/root", cwd=tmp_path, stdin="")
    assert done.returncode == 1
    assert "reads its questions from standard input" in done.stderr
    assert "Traceback" not in done.stderr
