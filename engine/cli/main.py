"""Entry point of the ``rlm`` command.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module adds
its parser and sets ``func`` to a handler ``(argparse.Namespace) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from engine.errors import RLMError
from engine.log import configure_logging

# Sub-command modules, in the order ``rlm --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "engine.cli.run",
    "engine.cli.demo",
    "engine.cli.model",
    "engine.cli.eval",
    "engine.cli.data",
    "engine.cli.serve",
    "engine.cli.view",
    "engine.cli.sandbox",
    "engine.cli.replay",
    "engine.cli.mcp",
    "engine.cli.export",
    "engine.cli.chat",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm",
        description="Run Recursive Language Model jobs in locked-down sandboxes.",
    )
    parser.add_argument("--log-level", default=None, help="debug, info, warning (default), error")
    parser.add_argument(
        "--log-format", choices=["auto", "json", "pretty"], default=None, help="log rendering"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _Terminated:
    """Whether SIGTERM arrived: it then stops the command as Ctrl-C does (exit status 143)."""

    seen = False


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM's default ends Python at once, without the clean-up a cancelled run does: a
    # `kill`, `docker stop` or `timeout` would leave the task's sandbox container running.
    # Re-raised as SIGINT it takes Ctrl-C's path: asyncio's runner cancels the main task
    # (sandboxes and servers close), or KeyboardInterrupt outside an event loop.
    _Terminated.seen = True
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell that ignores SIGINT for background jobs must not make SIGTERM ignored too.
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rlm`` command line with ``argv``; return the exit status."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RLMError as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if _Terminated.seen:
            print("rlm: stopped by SIGTERM", file=sys.stderr)
            return 143
        print("rlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
