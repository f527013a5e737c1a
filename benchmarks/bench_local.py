"""Needle-in-a-haystack with the embedded local model: RLM vs. the base model called directly.

For each haystack length, ``--n`` seeded tasks (one secret code hidden in filler prose) are
solved twice:

* ``rlm``: the full engine, the local model as root and sub model, code in the sandbox;
* ``base``: one direct call to the same model with the haystack in the prompt, cut to what
  fits the model's context window (a needle in the cut-off part cannot be found).

Prints accuracy, median wall time and median turns per length and method (``make
bench-local``). On a 2-core CPU this takes long: prompt processing slows from ~28 to ~8
tokens/s as the prompt grows, so one base call over a 128K haystack (~25K tokens) takes 20-46
minutes. Every outcome is
appended to ``--results`` as it finishes and a re-run skips what is there, so the full run
can be spread over several sittings (``--methods rlm`` first, then the slow ``base``); use
``--n 2 --lengths 8000`` for a quick look.

    python benchmarks/bench_local.py [--n 10] [--lengths 8000,32000,128000] [--methods rlm,base]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from engine import Engine, EngineConfig, Limits  # noqa: E402
from engine.interrupts import stop_on_sigterm  # noqa: E402
from engine.local import LocalModelServer  # noqa: E402
from engine.models import CallScheduler, ModelClient, ModelSpec  # noqa: E402
from engine.rlm.demo import is_correct, make_haystack  # noqa: E402


@dataclass
class Outcome:
    length: int
    method: str
    seed: int
    correct: bool
    wall_s: float
    turns: int
    detail: str


async def _chars_per_token(spec: ModelSpec, sample: str) -> float:
    base = (spec.api_base or "").removesuffix("/v1")
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.post(f"{base}/tokenize", json={"content": sample})
        resp.raise_for_status()
        tokens = len(resp.json()["tokens"])
    return len(sample) / max(tokens, 1)


async def ask_base(
    client: ModelClient, spec: ModelSpec, text: str, question: str, *, window: int, max_tokens: int
) -> tuple[str, str, float]:
    """One direct call with ``text`` cut to what fits ``window``: (answer, detail, seconds)."""
    ratio = await _chars_per_token(spec, text[:4000])
    # Leave room for the question, the chat template and the answer.
    budget_chars = int((window - 300 - max_tokens) * ratio * 0.97)
    cut = text[:budget_chars]
    started = time.monotonic()
    try:
        reply = await client.complete(
            dataclasses.replace(spec, temperature=0.0, max_tokens=max_tokens),
            [{"role": "user", "content": f"{cut}\n\n{question}"}],
            role="base",
        )
        answer = reply.answer
        detail = (
            f"cut to {len(cut):,} of {len(text):,} chars"
            if len(cut) < len(text)
            else f"whole context, {len(text):,} chars"
        )
    except Exception as exc:  # a benchmark reports failures, it does not stop on them
        answer, detail = "", f"error: {exc}"
    return answer, detail, time.monotonic() - started


async def run_base(client: ModelClient, spec: ModelSpec, length: int, seed: int) -> Outcome:
    hay = make_haystack(length, seed)
    question = f"Question: {hay.question} Reply with the code only."
    window = spec.context_window or 32_768
    answer, detail, wall = await ask_base(
        client, spec, hay.text, question, window=window, max_tokens=40
    )
    return Outcome(length, "base", seed, is_correct(answer, hay.secret), wall, 1, detail)


async def run_rlm(engine: Engine, length: int, seed: int) -> Outcome:
    hay = make_haystack(length, seed)
    result = await engine.run(hay.question, hay.text)
    return Outcome(
        length,
        "rlm",
        seed,
        is_correct(result.answer, hay.secret),
        result.wall_s,
        result.iterations,
        f"stop={result.stop_reason} answer={result.answer[:40]!r}",
    )


def _label(length: int) -> str:
    return f"{length // 1000}K" if length >= 1000 else str(length)


def _key(length: int, method: str, seed: int) -> tuple[int, str, int]:
    return (length, method, seed)


def load_outcomes(path: Path) -> dict[tuple[int, str, int], Outcome]:
    """Outcomes already measured in ``path`` (one JSON object a line), keyed for resuming.

    A torn last line (the run was killed while writing) is skipped: that task runs again.
    """
    done: dict[tuple[int, str, int], Outcome] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            outcome = Outcome(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        done[_key(outcome.length, outcome.method, outcome.seed)] = outcome
    return done


def open_results(path: Path) -> TextIO:
    """Open ``path`` for appending outcomes, ending a torn last line so the next one is whole."""
    sink = path.open("a")
    if sink.tell() and not path.read_bytes().endswith(b"\n"):
        sink.write("\n")
    return sink


def report(outcomes: list[Outcome], n: int, lengths: list[int], methods: list[str]) -> str:
    """Accuracy, median wall time and turns per length and method; rows not yet run say so."""
    lines = [f"{'length':>7} {'method':>6} {'accuracy':>9} {'median wall s':>14} {'turns':>6}"]
    for length in lengths:
        for method in methods:
            group = [o for o in outcomes if o.length == length and o.method == method]
            if not group:
                lines.append(f"{_label(length):>7} {method:>6} {'not run':>9}")
                continue
            right = sum(o.correct for o in group)
            pending = f"  ({n - len(group)} of {n} not run yet)" if len(group) < n else ""
            lines.append(
                f"{_label(length):>7} {method:>6} {right:>4}/{len(group):<4} "
                f"{statistics.median(o.wall_s for o in group):>14.1f} "
                f"{statistics.median(o.turns for o in group):>6.1f}{pending}"
            )
    return "\n".join(lines)


def summarize(
    outcomes: list[Outcome], n: int, lengths: list[int], methods: list[str]
) -> list[dict[str, object]]:
    """The report's rows as data: per length and method, tasks run, right, medians."""
    rows: list[dict[str, object]] = []
    for length in lengths:
        for method in methods:
            group = [o for o in outcomes if o.length == length and o.method == method]
            rows.append(
                {
                    "length_chars": length,
                    "method": method,
                    "planned": n,
                    "run": len(group),
                    "correct": sum(o.correct for o in group),
                    "accuracy": round(sum(o.correct for o in group) / len(group), 3)
                    if group
                    else None,
                    "median_wall_s": round(statistics.median(o.wall_s for o in group), 1)
                    if group
                    else None,
                    "median_turns": statistics.median(o.turns for o in group) if group else None,
                }
            )
    return rows


async def main(args: argparse.Namespace) -> int:
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not lengths or any(x < 1000 for x in lengths):
        raise SystemExit("--lengths must be haystack sizes in characters, each >= 1000")
    if not methods or set(methods) - {"rlm", "base"}:
        raise SystemExit("--methods must be rlm, base or rlm,base")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = load_outcomes(results)
    wanted = [
        _key(length, method, args.seed + i)
        for length in lengths
        for i in range(args.n)
        for method in methods
    ]
    missing = [key for key in wanted if key not in done]
    todo = [] if args.report_only else missing
    print(
        f"{len(wanted) - len(missing)} of {len(wanted)} tasks already in {results}; "
        f"running {len(todo)}",
        file=sys.stderr,
    )
    if todo:
        config = EngineConfig(
            model=None,
            limits=Limits(max_iterations=args.max_iterations, max_wall_time_s=args.task_timeout),
            trajectory_dir=Path(args.trajectory_dir) if args.trajectory_dir else None,
        )
        # One server for both methods; the engine finds it on the default port and reuses it.
        async with LocalModelServer() as server, Engine(config) as engine:
            # A base call over a 128K haystack reads ~25K tokens: half an hour on a CPU. It
            # gets its own long timeout and no retries (a retry would only repeat the wait).
            client = ModelClient(CallScheduler(max_retries=0), timeout_s=args.base_timeout)
            with open_results(results) as sink:
                for length, method, seed in todo:
                    if method == "rlm":
                        outcome = await run_rlm(engine, length, seed)
                    else:
                        outcome = await run_base(client, server.spec, length, seed)
                    done[_key(length, method, seed)] = outcome
                    sink.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
                    sink.flush()
                    print(
                        f"{_label(length):>5} {method:>4} seed={seed} "
                        f"{'OK ' if outcome.correct else 'BAD'} {outcome.wall_s:7.1f}s "
                        f"turns={outcome.turns} {outcome.detail}",
                        file=sys.stderr,
                        flush=True,
                    )
    measured = [done[k] for k in wanted if k in done]
    print(report(measured, args.n, lengths, methods))
    rows = summarize(measured, args.n, lengths, methods)
    summary_path = Path(args.summary) if args.summary else None
    print(f"wrote {write_results('local', {'outcomes': str(results), 'rows': rows}, summary_path)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="tasks per length (default 10)")
    parser.add_argument("--lengths", default="8000,32000,128000", help="haystack sizes, chars")
    parser.add_argument("--methods", default="rlm,base", help="rlm, base or rlm,base")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    parser.add_argument("--max-iterations", type=int, default=12)
    parser.add_argument("--task-timeout", type=float, default=900.0, help="seconds per RLM task")
    parser.add_argument(
        "--base-timeout", type=float, default=3600.0, help="seconds per base-model call"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="print the report of --results; run nothing"
    )
    parser.add_argument("--trajectory-dir", default=None)
    parser.add_argument(
        "--results",
        default="out/bench-local/outcomes.jsonl",
        help="JSONL of outcomes, appended as tasks finish; a re-run skips what it holds",
    )
    parser.add_argument(
        "--summary", default=None, help="summary JSON (default out/bench/local.json)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and model servers
    sys.exit(anyio.run(main, parse_args()))
