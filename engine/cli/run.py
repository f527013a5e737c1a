"""``rlm run``: answer one query about one context and print the answer.

Exit status: 0 answered, 3 stopped at a limit before the answer was final (the partial answer
is printed and the message names the limit), 1 on errors (clear message, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from engine.config import EngineConfig, load_config
from engine.contexts import ContextSpec, read_stdin
from engine.errors import ContextError
from engine.interrupts import signals_wake_the_loop
from engine.settings import add_arguments, flag_values

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LIMIT = 3

_LIMIT_TEXT = {
    "max_iterations": "the iteration limit (--max-iterations)",
    "max_wall_time": "the wall-time limit (--max-wall-time)",
    "max_tokens": "the token budget (--max-tokens)",
    "max_cost": "the cost budget (--max-cost)",
    "max_sub_calls": "the sub-call budget (--max-sub-calls)",
    "cancelled": "a cancellation",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` sub-command."""
    parser = subparsers.add_parser(
        "run",
        help="answer a query about a context file or directory",
        description=(
            "Answer --query about --context with a Recursive Language Model: the root model "
            "writes Python that runs in a sandboxed kernel where the context is `context`. "
            "Settings come from flags > RLM_* environment variables > --config / $RLM_CONFIG "
            "/ ./rlm.toml > defaults. Provider keys use the usual variables (OPENAI_API_KEY, "
            "...). Without --model the embedded local model is used."
        ),
    )
    parser.add_argument("--query", "-q", required=True, help="the question to answer")
    add_context_arguments(
        parser,
        "context file or folder, or - for standard input; repeat it for several (context "
        "is then a dict by path, like a folder's). PDF, DOCX and HTML become text on the "
        "host; folders honour .gitignore and skip binary files and outside symlinks",
    )
    add_engine_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress on stderr (live on a terminal, else a line per step)",
    )
    parser.set_defaults(func=handle)


def add_context_arguments(parser: argparse.ArgumentParser, context_help: str) -> None:
    """``--context`` (repeatable) and the folder filters, as :func:`context_from_args` reads
    them; ``rlm chat`` shares them."""
    parser.add_argument(
        "--context", "-c", action="append", default=None, metavar="PATH", help=context_help
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="in folders, keep only files matching GLOB (gitignore syntax; repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="in folders, leave out files and folders matching GLOB (repeatable)",
    )
    parser.add_argument(
        "--no-gitignore",
        dest="gitignore",
        action="store_false",
        help="do not apply .gitignore files in context folders",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine settings of ``rlm run`` (model, limits, tools, files; see
    :mod:`engine.settings`); ``rlm mcp`` shares them."""
    add_arguments(parser, "run")
    parser.add_argument("--config", type=Path, help="TOML config file")


def handle(args: argparse.Namespace) -> int:
    """Run the query; return the exit status."""
    flags = flag_values(args)
    config = load_config(flags, config_file=args.config)
    from engine.cli.status import RunStatus
    from engine.display import safe_for, stderr_console

    status = RunStatus(stderr_console()) if args.progress else None
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-stdin-") as scratch:
            context = context_from_args(args, Path(scratch))
            result = anyio.run(_run, config, args.query, context, status)
    finally:
        if status is not None:
            status.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    if result.stop_reason == "error":
        print(f"rlm: error: {safe_for(sys.stderr, result.error or '')}", file=sys.stderr)
        _trajectory_hint(result.trajectory_path)
        return EXIT_ERROR
    if result.ready:
        if not args.json:
            print(safe_for(sys.stdout, result.answer))
        return EXIT_OK
    what = _LIMIT_TEXT.get(result.stop_reason, result.stop_reason)
    shown = "partial answer below" if result.answer else "no answer yet"
    print(
        f"rlm: stopped at {what} after {result.iterations} turns before the answer was "
        f"final ({shown}); raise the limit to let it finish",
        file=sys.stderr,
    )
    _trajectory_hint(result.trajectory_path)
    if not args.json and result.answer:
        print(safe_for(sys.stdout, result.answer))
    return EXIT_LIMIT


def context_from_args(args: argparse.Namespace, scratch: Path) -> ContextSpec | None:
    """The --context/--include/--exclude flags as a ContextSpec (stdin copied to scratch)."""
    given: list[str] = args.context or []
    if not given:
        if args.include or args.exclude:
            raise ContextError("--include/--exclude filter a context folder; add --context")
        return None
    if given.count("-") > 1:
        raise ContextError("--context - (standard input) can be given only once")
    stdin = read_stdin(sys.stdin.buffer, scratch) if "-" in given else None
    paths = [Path(item) for item in given if item != "-"]
    return ContextSpec.from_paths(
        paths, include=args.include, exclude=args.exclude, gitignore=args.gitignore, stdin=stdin
    )


async def _run(config: EngineConfig, query: str, context: ContextSpec | None, progress: Any) -> Any:
    from engine.rlm import Engine

    async with signals_wake_the_loop(), Engine(config) as engine:
        return await engine.run(query, context, progress)


def _trajectory_hint(path: Path | None) -> None:
    if path is not None:
        print(f"rlm: trajectory: {path}", file=sys.stderr)
