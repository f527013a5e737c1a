"""``rlm chat`` as a user runs it: a real process with questions on standard input (a pipe,
or a real pseudo-terminal for the interactive prompt), a real sandbox (one kernel for all
questions), models replayed from a cassette."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import engine_containers
from tests.test_rlm_cli import _ENTRY, _env, rlm

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
        # An answer a hostile context steered: ESC sequences that set the terminal's title and
        # clear the screen.
        entry("ESCAPE-IT", f"answer['content'] = 'A\\x1b]0;pwned\\x07\\x1b[2JB'\n{READY}"),
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
        "SPLIT-WORDS how many words?\n\n/vars\nCOUNT-BANANA how many bananas?\nESCAPE-IT x\n"
        " exit \nignored\n"
    )
    status, out, err = chat(tmp_path, questions)
    assert status == 0, err
    # Each answer, then a blank line; nothing after `exit`. Into a pipe an answer goes as it is.
    assert out == "4\n\n2\n\nA\x1b]0;pwned\x07\x1b[2JB\n\n"
    assert "words: list" in err  # /vars lists what the first question left in the kernel
    first, second = turns(tmp_path, 2)
    session = first[0]["session"]["id"]  # type: ignore[index]
    assert second[0]["session"] == {"id": session, "turn": 2}
    assert not (tmp_path / "t.4.jsonl").exists()
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


# --- at a terminal: the interactive prompt under a real pseudo-terminal ----------------------

PROMPT = b"?\x1b[0m: "  # rich's prompt: a bold cyan "?", then ": "


class Terminal:
    """The user's side of a pseudo-terminal that ``rlm chat`` runs in as its controlling
    terminal (so Ctrl-C typed here reaches it as SIGINT, as in a shell)."""

    def __init__(self, master: int, process: subprocess.Popen[bytes]) -> None:
        self.master, self.process, self.seen = master, process, b""

    def expect(self, text: bytes, timeout: float = 240) -> bytes:
        """Output up to and including ``text`` (fails naming what came instead)."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            ready, _, _ = select.select([self.master], [], [], deadline - time.monotonic())
            chunk = os.read(self.master, 65536) if ready else b""
            assert chunk, f"{text!r} never came; the terminal shows {self.seen[-3000:]!r}"
            self.seen += chunk
        end = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:end], self.seen[end:]
        return before

    def type(self, keys: bytes) -> None:
        """Type ``keys`` as a person does: a moment after the prompt showed (readline has
        then taken the terminal; keys typed before it would be echoed twice)."""
        time.sleep(0.3)
        os.write(self.master, keys)

    def ended(self, timeout: float = 240) -> tuple[int, bytes]:
        """The exit status, and what the terminal showed since the last :meth:`expect`.

        The terminal is read all the while (a process writing to a full terminal blocks). One
        that has not ended in ``timeout`` s is sent SIGABRT: faulthandler (on in :func:`_env`)
        then prints every thread's stack, and the failure shows them."""
        deadline = time.monotonic() + timeout
        aborted = False
        while True:
            ready = select.select([self.master], [], [], 0.2)[0]
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the terminal's other side is closed: all read
                    chunk = b""
                self.seen += chunk
                ready = bool(chunk)
            status = self.process.poll()
            if status is not None and not ready:
                break
            if status is None and not aborted and time.monotonic() > deadline:
                self.process.send_signal(signal.SIGABRT)
                aborted = True
            if aborted and time.monotonic() > deadline + 30:
                self.process.kill()
        assert not aborted, f"the chat did not end in {timeout:g} s; it showed {self.seen!r}"
        return status, self.seen


def lines(shown: bytes) -> list[str]:
    """The terminal's lines without colours and cursor moves (a redrawn line keeps its last
    state)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode("utf-8", "replace"))
    return [line.rsplit("\r", 1)[-1] for line in text.split("\r\n")]


def _foreground_job_of(terminal: int) -> None:
    os.login_tty(terminal)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def terminal_chat(tmp_path: Path) -> Iterator[Terminal]:
    """``rlm chat`` on a pseudo-terminal (80x24); checks on the way out that it left the
    terminal's settings (echo, line mode) as it found them."""
    (tmp_path / "ctx.txt").write_text("apple banana cherry banana")
    master, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    settings = termios.tcgetattr(follower)
    args = [
        "chat", "--context", tmp_path / "ctx.txt", "--model", "openai/root",
        "--replay", cassette(tmp_path / "c.jsonl"), "--trajectory", tmp_path / "t.jsonl",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", _ENTRY, *map(str, args)],
        cwd=tmp_path,
        env={**_env(), "TERM": "xterm", "PYTHONFAULTHANDLER": "1"},
        # A session of its own with the pseudo-terminal as its controlling terminal, and Ctrl-C
        # as a shell gives its foreground job: CI may run the suite as a background job, which
        # a shell starts with SIGINT ignored, and an ignored signal stays ignored across exec
        # (that, not the chat, is why Ctrl-C hung here in two full CI runs).
        preexec_fn=lambda: _foreground_job_of(follower),
        close_fds=False,
    )
    try:
        yield Terminal(master, process)
        assert termios.tcgetattr(follower) == settings
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(follower)


@docker
def test_chat_at_a_terminal_answers_lists_variables_and_exits(tmp_path: Path) -> None:
    with terminal_chat(tmp_path) as term:
        assert b"exit or Ctrl-D ends" in term.expect(PROMPT)
        term.type(b"SPLIT-WORDS how many words?\r")
        shown = lines(term.expect(PROMPT))
        assert shown[0] == "SPLIT-WORDS how many words?"  # echoed once, by readline
        assert shown[-3:] == ["4", "", "?: "]  # the answer, a blank line, the next prompt
        term.type(b"/vars\r")
        assert lines(term.expect(PROMPT)) == ["/vars", "words: list, len 4", "?: "]
        # On a terminal an answer's control characters are shown, not obeyed.
        term.type(b"ESCAPE-IT the title\r")
        shown = term.expect(PROMPT)
        assert b"A\\x1b]0;pwned\\x07\\x1b[2JB" in shown and b"\x1b]0;pwned" not in shown
        term.type(b"exit\r")
        status, shown = term.ended()
    assert status == 0, shown
    assert b"Traceback" not in term.seen
    (first,) = turns(tmp_path, 1)
    assert no_container_of(first[0]["session"]["id"])  # type: ignore[index]


@docker
@pytest.mark.parametrize(
    ("key", "status"), [(b"\x04", 0), (b"\x03", 130)], ids=["ctrl-d", "ctrl-c"]
)
def test_ctrl_d_or_ctrl_c_at_the_prompt_ends_the_chat(
    tmp_path: Path, key: bytes, status: int
) -> None:
    """Ctrl-D ends the chat (a new line first, as a shell does); Ctrl-C interrupts it as it
    interrupts ``rlm run``. Either way the process ends and the terminal is as it was."""
    with terminal_chat(tmp_path) as term:
        term.expect(PROMPT)
        term.type(key)
        ended, shown = term.ended()
    assert ended == status, shown
    assert b"Traceback" not in shown
    assert shown.startswith(b"\r\n") if status == 0 else b"rlm: interrupted" in shown
