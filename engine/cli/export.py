"""``rlm export``: training data from trajectories (SFT chat JSONL or RL rollouts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from engine.errors import ConfigError
from engine.export import (
    Source,
    eval_sources,
    runs_from_events,
    service_sources,
    to_rollout,
    to_sft,
    trajectory_sources,
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="turn trajectories into SFT or RL training data",
        description=(
            "Export root-model conversations from trajectory files (or directories), an eval's "
            "results (--eval OUT_DIR, which adds each item's score) or a service's jobs "
            "(--service URL --api-key KEY). Formats: sft (OpenAI chat JSONL) and rollout "
            "(prompt/completion/reward with per-turn rewards; see docs/export.md)."
        ),
    )
    parser.add_argument("paths", nargs="*", type=Path, help="trajectory files or directories")
    parser.add_argument("--eval", dest="eval_dir", type=Path, help="an `rlm eval --out` directory")
    parser.add_argument("--service", help="URL of a running `rlm serve`")
    parser.add_argument("--api-key", help="API key for --service (default $RLM_API_KEY)")
    parser.add_argument("--format", choices=["sft", "rollout"], default="sft")
    parser.add_argument("--out", "-o", type=Path, help="output JSONL (default: standard output)")
    parser.add_argument(
        "--sub-calls", action="store_true", help="sft: also one line per successful llm_query"
    )
    parser.add_argument("--min-score", type=float, help="keep runs scored at least this")
    parser.add_argument(
        "--stop-reason",
        action="append",
        help="keep runs that stopped for this reason (repeatable; e.g. answer, max_iterations)",
    )
    parser.add_argument(
        "--children", action="store_true", help="also export child runs (rlm_query), not only roots"
    )
    parser.set_defaults(func=handle)


def _sources(args: argparse.Namespace) -> Iterator[Source]:
    if args.paths:
        yield from trajectory_sources(args.paths)
    if args.eval_dir is not None:
        yield from eval_sources(args.eval_dir)
    if args.service:
        key = args.api_key or os.environ.get("RLM_API_KEY")
        if not key:
            raise ConfigError("--service needs --api-key (or RLM_API_KEY)")
        yield from service_sources(args.service, key)


def handle(args: argparse.Namespace) -> int:
    """Export; print what was kept and why the rest was not to standard error."""
    if not (args.paths or args.eval_dir or args.service):
        raise ConfigError("nothing to export: give trajectory paths, --eval DIR or --service URL")
    counts: Counter[str] = Counter()
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        for source in _sources(args):
            for run in runs_from_events(source.events, source=source.name):
                if run.depth > 1 and not args.children:
                    continue
                if args.stop_reason and run.stop_reason not in args.stop_reason:
                    counts["skipped (stop reason)"] += 1
                    continue
                if args.min_score is not None and (
                    source.score is None or source.score < args.min_score
                ):
                    counts["skipped (score)"] += 1
                    continue
                if args.format == "sft":
                    lines = to_sft(
                        run, score=source.score, source=source.name, sub_calls=args.sub_calls
                    )
                else:
                    rollout = to_rollout(run, score=source.score, source=source.name)
                    lines = [rollout] if rollout is not None else []
                if not lines:
                    counts["skipped (no turn)"] += 1
                for line in lines:
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    counts["lines written"] += 1
    finally:
        if args.out:
            out.close()
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing found"
    print(f"rlm export: {summary}", file=sys.stderr)
    return 0
