"""Entry point of the ``rlm`` command.

Each sub-command lives in its own module exposing ``register(subparsers)``; the module adds
its parser and sets ``func`` to a handler ``(argparse.Namespace) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine.errors import RLMError
from engine.interrupts import stop_on_sigterm, terminated
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rlm`` command line with ``argv``; return the exit status."""
    stop_on_sigterm()
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
        if terminated():
            print("rlm: stopped by SIGTERM", file=sys.stderr)
            return 143
        print("rlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
