"""``rlm demo``: the haystack demo with the embedded local model (what ``make run`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``rlm demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="find a secret hidden in a long text with the local model (needs Docker)",
        description=(
            "Generate a long text with one hidden secret code and ask the engine, with the "
            "embedded local model as root and sub model, to find it. Exits 0 when the answer "
            "is correct."
        ),
    )
    parser.add_argument("--chars", type=int, default=30_000, help="haystack size (default 30000)")
    parser.add_argument("--seed", type=int, default=0, help="haystack seed (default 0)")
    parser.add_argument(
        "--max-iterations", type=int, default=12, help="root-model turns allowed (default 12)"
    )
    parser.add_argument(
        "--trajectory", type=Path, default=None, help="write the trajectory JSONL here"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-turn progress lines")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.rlm.demo import run_demo

    if args.chars < 500:
        raise ConfigError("--chars must be at least 500")
    correct, _result = anyio.run(
        lambda: run_demo(
            args.chars,
            args.seed,
            trajectory_path=args.trajectory,
            max_iterations=args.max_iterations,
            verbose=not args.quiet,
        )
    )
    return 0 if correct else 1
