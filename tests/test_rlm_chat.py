"""``rlm chat`` as a user runs it: a real process with questions on standard input, a real
sandbox (one kernel for all questions), models replayed from a cassette."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import engine_containers
from tests.test_rlm_cli import rlm

docker = pytest.mark.usefixtures("docker_ready")


def entry(contains: str, source: str) -> str:
    reply = f"```repl\n{source}\n```"
    match = {"model": "root", "contains": contains}
    return json.dumps({"match": match, "response": {"content": reply}, "repeat": True})


READY = "answer['ready'] = True"


def cassette(path: Path) -> Path:
    """First match wins, and a later question's prompt also names the earlier ones (in the
    account), so the entries of later questions come first."""
    failing = {"match": {"model": "root", "contains": "BREAK-IT"}, "status": 400, "repeat": True}
    lines = [
        json.dumps({**failing, "response": {"content": "bad request"}}),
        # `words` exists only if the kernel of the first question is still there.
        entry("COUNT-BANANA", f"answer['content'] = str(words.count('banana'))\n{READY}"),
        entry(
            "SPLIT-WORDS", f"words = context.split()\nanswer['content'] = str(len(words))\n{READY}"
        ),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def chat(tmp_path: Path, stdin: str | bytes) -> tuple[int, str, str]:
    (tmp_path / "ctx.txt").write_text("apple banana cherry banana")
    done = rlm(
        "chat", "--context", tmp_path / "ctx.txt", "--model", "openai/root",
        "--replay", cassette(tmp_path / "c.jsonl"), "--trajectory", tmp_path / "t.jsonl",
        cwd=tmp_path, stdin=stdin,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def turns(tmp_path: Path, count: int) -> list[list[dict[str, object]]]:
    return [
        [json.loads(line) for line in (tmp_path / f"t.{n}.jsonl").read_text().splitlines()]
        for n in range(1, count + 1)
    ]


def no_container_of(session: object) -> bool:
    return not [name for name in engine_containers() if str(session) in name]


@docker
def test_chat_answers_questions_from_a_pipe_on_one_kernel(tmp_path: Path) -> None:
    questions = (
        "SPLIT-WORDS how many words?\n\n/vars\nCOUNT-BANANA how many bananas?\n exit \nignored\n"
    )
    status, out, err = chat(tmp_path, questions)
    assert status == 0, err
    assert out == "4\n\n2\n\n"  # each answer, then a blank line; nothing after `exit`
    assert "words: list" in err  # /vars lists what the first question left in the kernel
    first, second = turns(tmp_path, 2)
    session = first[0]["session"]["id"]  # type: ignore[index]
    assert second[0]["session"] == {"id": session, "turn": 2}
    assert not (tmp_path / "t.3.jsonl").exists()
    assert no_container_of(session)


@docker
def test_chat_goes_on_after_a_bad_question_and_ends_at_end_of_input(tmp_path: Path) -> None:
    # Not UTF-8, then a good question, then one the model fails; then standard input ends
    # (Ctrl-D at a terminal) without `exit`.
    questions = b"\xff\xfe which?\nSPLIT-WORDS how many words?\nBREAK-IT now\n"
    status, out, err = chat(tmp_path, questions)
    assert status == 1  # the last question failed
    assert "rlm: error: the query is not valid UTF-8 text (byte 0xff at character 1)" in err
    assert out == "\n4\n\n\n"  # a blank line closes each question's output, failed or not
    assert err.count("rlm: error:") == 2 and "rlm: trajectory:" in err
    first, second = turns(tmp_path, 2)  # the bad line never reached the engine
    assert first[0]["query"] == "SPLIT-WORDS how many words?"
    assert second[-1]["type"] == "run_end" and second[-1]["stop_reason"] == "error"
    assert no_container_of(first[0]["session"]["id"])  # type: ignore[index]


def test_chat_names_a_missing_context_file(tmp_path: Path) -> None:
    done = rlm("chat", "--context", tmp_path / "nope.txt", "--model", "openai/root",
               cwd=tmp_path, stdin="a question\n")  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr
        == f"rlm: error: context {tmp_path / 'nope.txt'} does not exist; check the path\n"
    )
    assert done.stdout == ""


def test_chat_refuses_stdin_as_the_context(tmp_path: Path) -> None:
    done = rlm("chat", "--context", "-", "--model", "openai/root", cwd=tmp_path, stdin="")
    assert done.returncode == 1
    assert "reads its questions from standard input" in done.stderr
    assert "Traceback" not in done.stderr
