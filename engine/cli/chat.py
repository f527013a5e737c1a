"""``rlm chat``: ask questions one after another about one context, on one live kernel.

On a terminal it is an interactive prompt (line editing and input history through
``readline``; ``exit``, ``quit`` or Ctrl-D end it, ``/vars`` lists the kernel's variables;
Ctrl-C stops it as it stops ``rlm run``). In a pipe each line of standard input is a question
and each answer is printed on its own line(s), followed by a blank line. Exit status: 0, or 1
when the last question failed (130 after Ctrl-C).

A question is read in a daemon thread of its own: ``input()`` cannot be interrupted from
another thread, and an anyio worker thread would be joined at exit, so a Ctrl-C (or SIGTERM)
at the prompt would end the chat's clean-up but never the process. The terminal's settings
are put back when the chat ends, since ``readline`` left mid-line keeps its raw mode.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from engine.cli.run import (
    EXIT_ERROR,
    EXIT_OK,
    add_context_arguments,
    add_engine_arguments,
    context_from_args,
)
from engine.config import EngineConfig, load_config
from engine.errors import ConfigError, ContextError
from engine.interrupts import signals_wake_the_loop
from engine.settings import flag_values

if TYPE_CHECKING:
    from engine.contexts import ContextSpec
    from engine.rlm.session import EngineSession

_EXIT_WORDS = frozenset({"exit", "quit", ":q"})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chat`` sub-command."""
    parser = subparsers.add_parser(
        "chat",
        help="ask questions in a loop about a context, on one live kernel",
        description=(
            "Ask questions about --context one after another. All questions run on the same "
            "sandboxed kernel, so variables from earlier questions are still there, and each "
            "question's root model is told a short account of the earlier questions and "
            "answers. Questions come from the prompt, or one per line from standard input "
            "in a pipe. Settings as for rlm run."
        ),
    )
    add_context_arguments(
        parser, "context file or folder (repeatable; standard input holds the questions)"
    )
    add_engine_arguments(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the chat; return the exit status."""
    if "-" in (args.context or []):
        raise ContextError(
            "rlm chat reads its questions from standard input; give the context as a file"
        )
    config = load_config(flag_values(args), config_file=args.config)
    interactive = sys.stdin.isatty()
    with tempfile.TemporaryDirectory(prefix="rlm-chat-") as scratch, _terminal_kept(interactive):
        context = context_from_args(args, Path(scratch))
        return anyio.run(_chat, config, context, interactive)


@contextlib.contextmanager
def _terminal_kept(interactive: bool) -> Iterator[None]:
    """Put the terminal's settings back on the way out (echo and line mode, which readline
    turns off while it reads a line and does not restore when the chat ends mid-prompt)."""
    if not interactive:
        yield
        return
    import termios

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # the terminal went away meanwhile
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _read_question(read: Callable[[], str | None]) -> str | None:
    """``read()`` in a daemon thread; cancelled (Ctrl-C), the thread is left to the exit."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    line: list[str | None] = [None]

    def reader() -> None:
        try:
            line[0] = read()
        finally:
            with contextlib.suppress(RuntimeError):  # the chat ended meanwhile
                anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=reader, name="rlm-chat-input", daemon=True).start()
    await done.wait()
    return line[0]


async def _chat(config: EngineConfig, context: ContextSpec | None, interactive: bool) -> int:
    from engine.display import stderr_console
    from engine.rlm import Engine
    from engine.rlm.query import check_query

    console = stderr_console()
    read = _prompt_reader(console) if interactive else _line_reader()
    status = EXIT_OK
    # Ctrl-C at the prompt may reach the thread reading the line; the loop must wake for it.
    async with (
        signals_wake_the_loop(),
        Engine(config) as engine,
        engine.session(context) as session,
    ):
        if interactive:
            console.print(
                "[dim]One kernel for all questions. exit or Ctrl-D ends; /vars lists the "
                "kernel's variables.[/dim]",
                highlight=False,
            )
        while True:
            question = await _read_question(read)
            if question is None or question.strip().lower() in _EXIT_WORDS:
                break
            question = question.strip()
            if not question:
                continue
            if question == "/vars":
                _show_variables(session)
                continue
            try:
                check_query(question)
            except ConfigError as exc:  # one bad line does not end the chat
                print(f"rlm: error: {exc}", file=sys.stderr)
                print(flush=True)
                status = EXIT_ERROR
                continue
            status = await _answer(session, question, interactive)
    return status


async def _answer(session: EngineSession, question: str, interactive: bool) -> int:
    from engine.cli.status import RunStatus
    from engine.display import safe_for, stderr_console

    progress = RunStatus(stderr_console()) if interactive else None
    try:
        result = await session.ask(question, progress)
    finally:
        if progress is not None:
            progress.close()
    if result.stop_reason == "error":
        print(f"rlm: error: {safe_for(sys.stderr, result.error or '')}", file=sys.stderr)
        print(f"rlm: trajectory: {result.trajectory_path}", file=sys.stderr)
        print(flush=True)
        return EXIT_ERROR
    if not result.ready:
        print(
            f"rlm: stopped at {result.stop_reason} after {result.iterations} turns before the "
            "answer was final" + (" (partial answer below)" if result.answer else ""),
            file=sys.stderr,
        )
    print(safe_for(sys.stdout, result.answer))
    print(flush=True)
    return EXIT_OK


def _show_variables(session: EngineSession) -> None:
    from engine.display import safe_for

    variables = session.variables
    if not variables:
        print("(no variables yet)", file=sys.stderr)
    for name, kind in variables.items():
        print(safe_for(sys.stderr, f"{name}: {kind}"), file=sys.stderr)


def _prompt_reader(console: Any) -> Callable[[], str | None]:
    """Read a question at a rich prompt; readline gives line editing and history."""
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401  (imported for its effect on input())
    from rich.prompt import Prompt

    def read() -> str | None:
        try:
            return Prompt.ask("[bold cyan]?[/bold cyan]", console=console)
        except EOFError:  # Ctrl-D: end the prompt's line, as a shell does
            console.print()
            return None

    return read


def _line_reader() -> Callable[[], str | None]:
    def read() -> str | None:
        line = sys.stdin.readline()
        return line if line else None

    return read
