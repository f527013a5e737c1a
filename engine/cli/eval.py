"""``rlm eval BENCH``: run benchmarks with the RLM and/or the base model, write a report."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.eval.base import parse_lengths
from engine.eval.registry import benchmark_names, get_benchmark, resolve

LOCAL_MAX_WALL_TIME_S = 300.0
# With --service: model flags make no sense (the service's models answer); budget flags
# become each job's limits (the service's API names are the flag names).
SERVICE_IGNORED = (
    "model",
    "sub_model",
    "api_base",
    "context_window",
    "max_output_tokens",
    "temperature",
    "replay",
)
SERVICE_LIMITS = ("max_iterations", "max_depth", "max_wall_time", "max_cost", "max_sub_calls")

# Flags passed straight to engine.config.load_config (flag dest == setting name).
_ENGINE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("model", str, "root model (litellm string); default: the embedded local model"),
    ("sub_model", str, "model for llm_query/llm_batch (default: --model)"),
    ("api_base", str, "OpenAI-compatible base URL for --model"),
    ("api_key", str, "API key for --api-base"),
    ("context_window", int, "the model's window in tokens (sets the base method's window)"),
    ("max_output_tokens", int, "max tokens per model reply"),
    ("temperature", float, "sampling temperature"),
    ("max_iterations", int, "RLM root turns per item"),
    ("max_depth", int, "RLM recursion depth"),
    ("max_wall_time", float, "seconds per RLM item (default 300 on the local model)"),
    ("max_cost", float, "USD per RLM item"),
    ("max_sub_calls", int, "sub-calls per RLM item"),
    ("replay", str, "answer every model call from this cassette (no provider contacted)"),
)


def register(subparsers: Any) -> None:
    """Add the ``eval`` command."""
    parser = subparsers.add_parser(
        "eval",
        help="run benchmarks (S-NIAH, OOLONG, OOLONG-Pairs, CodeQA, ...) and report",
        description=(
            "Generate benchmark items, answer them with the RLM and/or the base model (context "
            "truncated to its window, head and tail kept), score them and write results.jsonl, "
            "summary.md and score-vs-length plots into --out. Re-running resumes: finished "
            "items are skipped. Benchmark data is read from $RLM_DATA_DIR or ~/.cache/rlm/data "
            "(fetch it with rlm data pull)."
        ),
    )
    parser.add_argument(
        "bench",
        nargs="?",
        metavar="BENCH",
        help="benchmark name, a comma list, or 'all' (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    # Defaults sized for the embedded local model on a 2-core machine (minutes, not hours).
    parser.add_argument(
        "--lengths",
        default="2k,8k",
        help="context lengths, e.g. 8k,32k,128k (k=1024; default 2k,8k)",
    )
    parser.add_argument(
        "--unit",
        choices=["tokens", "chars"],
        default="tokens",
        help="what --lengths count (tokens use a real BPE tokenizer)",
    )
    parser.add_argument(
        "--n", type=int, default=2, help="items per benchmark and length (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument(
        "--method", default=None, help="rlm, base or both (default both; rlm with --service)"
    )
    parser.add_argument(
        "--service",
        default=None,
        metavar="URL",
        help="run the rlm items as jobs of this rlm serve (or of replicas behind a load "
        "balancer) instead of local sandboxes; --api-key is then the service's key",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="items evaluated at once")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="output directory")
    parser.add_argument(
        "--base-window",
        type=int,
        default=None,
        help="base method's window in tokens (default: model's, else 32768)",
    )
    parser.add_argument(
        "--keep-errors",
        action="store_true",
        help="on resume, do not re-run items whose earlier result recorded an error",
    )
    parser.add_argument(
        "--max-consecutive-errors",
        type=int,
        default=5,
        help="stop the run after this many failed items in a row (default 5)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild summary.md and plots from --out/results.jsonl",
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    for name, kind, help_text in _ENGINE_FLAGS:
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_text
        )
    parser.set_defaults(func=eval_command)


def service_target(args: argparse.Namespace) -> Any:
    """The ``--service`` target (key: --api-key, else $RLM_SERVICE_API_KEY), or None.

    Budget flags become the jobs' limits; the models are the service's."""
    if not args.service:
        return None
    from engine.eval.runner import ServiceTarget

    if not args.service.startswith(("http://", "https://")):
        raise ConfigError(f"--service must be an http(s):// URL, not {args.service!r}")
    ignored = [f"--{n.replace('_', '-')}" for n in SERVICE_IGNORED if getattr(args, n)]
    if ignored:
        raise ConfigError(
            f"{', '.join(ignored)} cannot be used with --service: the service's models answer"
        )
    limits = {name: getattr(args, name) for name in SERVICE_LIMITS if getattr(args, name)}
    key = args.api_key or os.environ.get("RLM_SERVICE_API_KEY")
    return ServiceTarget(args.service, key, limits)


def eval_command(args: argparse.Namespace) -> int:
    """Handler of ``rlm eval``."""
    if args.list:
        for name in benchmark_names():
            print(f"{name:18} {get_benchmark(name).description}")
        return 0
    if args.report_only:
        from engine.eval.report import write_report

        for path in write_report(args.out):
            print(path)
        return 0
    if not args.bench:
        raise ConfigError("name a benchmark (rlm eval sniah) or use --list")
    # Imported here: the engine config pulls in the model stack, which is slow to import and
    # not needed for `rlm --help` or `rlm eval --list`.
    from engine.config import load_config
    from engine.eval.progress import EvalProgress
    from engine.eval.runner import EvalConfig, parse_methods, run_eval

    flags = {name: getattr(args, name) for name, _, _ in _ENGINE_FLAGS}
    engine_cfg = load_config(flags, config_file=args.config)
    no_limit = engine_cfg.limits.max_wall_time_s is None
    if args.service is None and engine_cfg.model is None and no_limit:
        # On the small local model a lost RLM can spend its 20 turns at a minute each; cap
        # every item so the default runs finish in minutes (override with --max-wall-time).
        limits = dataclasses.replace(engine_cfg.limits, max_wall_time_s=LOCAL_MAX_WALL_TIME_S)
        engine_cfg = dataclasses.replace(engine_cfg, limits=limits)
    cfg = EvalConfig(
        benches=tuple(resolve(args.bench)),
        lengths=tuple(parse_lengths(args.lengths)),
        out_dir=args.out,
        n=args.n,
        seed=args.seed,
        methods=parse_methods(args.method or ("rlm" if args.service else "both")),
        unit=args.unit,
        concurrency=args.concurrency,
        engine=engine_cfg,
        base_window=args.base_window,
        retry_errors=not args.keep_errors,
        max_consecutive_errors=args.max_consecutive_errors,
        service=service_target(args),
    )
    printer = EvalProgress()
    try:
        paths = run_eval(cfg, on_start=printer.start, on_result=printer.result)
    finally:
        printer.close()
    for path in paths:
        print(path)
    return 0
