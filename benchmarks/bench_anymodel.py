"""Any model: the embedded model as a user would serve it, RLM vs. the base model (issue 14).

Two modes, the same GGUF file either way:

* ``embedded``: the engine's own local model (``model=None``), as ``make bench-local``;
* ``served``: a separate llama.cpp server this script starts under an unrelated alias
  (``house-model``, own port, 2 threads), called as ``openai/house-model`` at its
  ``--api-base`` with engine defaults: no profile is given, ``auto`` must work it out.

Benchmarks (the generators of ``engine/eval``, data from ``$RLM_DATA_DIR``):

* ``sniah``: RULER-style S-NIAH (key-value needle, haystack from a random point of the essay
  corpus) at 8K/32K/128K characters;
* ``oolong``: OOLONG trec_coarse at 8K tokens; ``pairs``: OOLONG-Pairs at 8K tokens (F1).

``rlm`` runs the engine; ``base`` calls the model once with the context in the prompt, cut to
what fits its window. Every outcome is appended to ``--results`` as it finishes and a re-run
skips what is there (a torn last line, or a run that ended in an error rather than an
answer, runs again), so the grid can be filled over several
sittings: a base call at 128K takes 20-46 minutes on a 2-core CPU.

    python benchmarks/bench_anymodel.py --modes served --benches sniah --lengths 8000,32000 \\
        --methods rlm --n 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio
import httpx

# The sibling script (this directory is on sys.path when a benchmark runs as a script).
from bench_local import ask_base, open_results

from benchmarks.results import git_commit, write_results  # bench_local put the checkout on sys.path
from engine import Engine, EngineConfig, Limits
from engine.eval.base import EvalItem
from engine.eval.registry import get_benchmark
from engine.interrupts import stop_on_sigterm
from engine.local import LocalModelServer
from engine.models import CallScheduler, ModelClient, ModelSpec

SERVED_ALIAS = "house-model"
SERVED_PORT = 8791
# bench name -> (registry name, length unit, default lengths)
BENCHES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "sniah": ("sniah", "chars", (8_000, 32_000, 128_000)),
    "oolong": ("oolong", "tokens", (8_000,)),
    "pairs": ("oolong-pairs", "tokens", (8_000,)),
}
MODES = ("embedded", "served")
METHODS = ("rlm", "base")


@dataclass
class Outcome:
    bench: str
    length: int
    mode: str
    method: str
    index: int
    score: float
    wall_s: float
    turns: int
    profile: str
    detail: str
    commit: str = ""  # the engine's commit that ran it (older lines: unknown)
    answer: str = ""  # the whole answer, so a later scorer can score it again (older lines: none)


Key = tuple[str, int, str, str, int]


def key_of(o: Outcome) -> Key:
    return (o.bench, o.length, o.mode, o.method, o.index)


def load_outcomes(path: Path) -> dict[Key, Outcome]:
    """Outcomes already in ``path`` (JSON lines), keyed for resuming; torn lines are skipped."""
    done: dict[Key, Outcome] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                outcome = Outcome(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            done[key_of(outcome)] = outcome
    return done


def _label(length: int, bench: str) -> str:
    unit = "tok" if BENCHES[bench][1] == "tokens" else ""
    return f"{length // 1000}K{unit}"


def report(outcomes: list[Outcome], wanted: list[Key]) -> str:
    """Mean score (accuracy for S-NIAH), median wall time and turns per cell of the grid."""
    columns = [("bench", 6), ("length", 7), ("mode", 8), ("method", 6), ("score", 12)]
    lines = [" ".join(f"{name:>{width}}" for name, width in columns) + f" {'wall s':>8} turns"]
    cells = sorted({k[:4] for k in wanted}, key=lambda c: (c[0], c[1], c[2], c[3]))
    for bench, length, mode, method in cells:
        group = [o for o in outcomes if key_of(o)[:4] == (bench, length, mode, method)]
        planned = sum(1 for k in wanted if k[:4] == (bench, length, mode, method))
        label = f"{bench:>6} {_label(length, bench):>7} {mode:>8} {method:>6}"
        if not group:
            lines.append(f"{label} {'not run':>12}")
            continue
        total = sum(o.score for o in group)
        score = (
            f"{total:g}/{len(group)}"
            if bench == "sniah"
            else f"{total / len(group):.2f} (n={len(group)})"
        )
        pending = f"  ({planned - len(group)} of {planned} not run)" if len(group) < planned else ""
        lines.append(
            f"{label} {score:>12} {statistics.median(o.wall_s for o in group):>8.1f} "
            f"{statistics.median(o.turns for o in group):>5.1f}{pending}"
        )
    return "\n".join(lines)


def summarize(outcomes: list[Outcome], wanted: list[Key]) -> list[dict[str, object]]:
    """The report's rows as data: per bench, length, mode and method, runs and medians."""
    rows: list[dict[str, object]] = []
    for bench, length, mode, method in sorted({k[:4] for k in wanted}):
        group = [o for o in outcomes if key_of(o)[:4] == (bench, length, mode, method)]
        rows.append(
            {
                "bench": bench,
                "length": length,
                "unit": BENCHES[bench][1],
                "mode": mode,
                "method": method,
                "planned": sum(1 for k in wanted if k[:4] == (bench, length, mode, method)),
                "run": len(group),
                "mean_score": round(sum(o.score for o in group) / len(group), 3) if group else None,
                "median_wall_s": round(statistics.median(o.wall_s for o in group), 1)
                if group
                else None,
                "median_turns": statistics.median(o.turns for o in group) if group else None,
            }
        )
    return rows


# --- the served model -----------------------------------------------------------------------


def _serve(model: str, port: int, ctx: int, threads: int) -> int:
    """Child process: serve ``model`` under :data:`SERVED_ALIAS` until terminated."""
    from engine.local.serve import ServeOptions, serve_forever

    options = ServeOptions(
        model_path=Path(model), port=port, ctx_size=ctx, threads=threads, alias=SERVED_ALIAS
    )
    serve_forever(options, on_ready=lambda url: print(f"ready {url}", flush=True))
    return 0


@contextlib.asynccontextmanager
async def served_model(args: argparse.Namespace) -> AsyncIterator[ModelSpec]:
    """Start the separate llama.cpp server (a child process) and stop it by its pid."""
    from engine.local.catalog import DEFAULT_MODEL, get_entry
    from engine.local.pull import find_model

    model = Path(args.model_file) if args.model_file else find_model(get_entry(DEFAULT_MODEL))
    if model is None:
        raise SystemExit("the model file is missing; run `rlm model pull` or pass --model-file")
    with socket.socket() as probe:
        # A server left on the port (an earlier bench killed hard) would answer the health
        # check for ours, and every task would then fail when it went away.
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            raise SystemExit(
                f"port {args.port} is in use (a model server left by an earlier run?): "
                "stop it or pass --port"
            )
    command = [sys.executable, __file__, "--serve-internal", str(model), "--port", str(args.port)]
    command += ["--ctx", str(args.served_ctx), "--threads", str(args.threads)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        with anyio.fail_after(300):
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"the served model exited with code {process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    async with httpx.AsyncClient(timeout=5) as client:
                        if (await client.get(f"{base}/health")).status_code == 200:
                            break
                await anyio.sleep(1)
        # What a user types: a model string and an api_base, nothing this engine recognises.
        yield ModelSpec(f"openai/{SERVED_ALIAS}", api_base=f"{base}/v1", api_key="none")
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- one task ---------------------------------------------------------------------------------


async def run_base(
    client: ModelClient, spec: ModelSpec, item: EvalItem, window: int
) -> dict[str, Any]:
    answer, detail, wall = await ask_base(
        client, spec, str(item.context), item.query, window=window, max_tokens=400
    )
    return {"answer": answer, "wall_s": wall, "turns": 1, "detail": detail}


async def run_rlm(engine: Engine, item: EvalItem) -> dict[str, Any]:
    result = await engine.run(item.query, item.context)
    detail = f"stop={result.stop_reason} answer={result.answer[:60]!r}"
    return {
        "error": result.error if result.stop_reason == "error" else None,
        "answer": result.answer,
        "wall_s": result.wall_s,
        "turns": result.iterations,
        "detail": detail,
    }


async def run_mode(
    mode: str, todo: list[Key], items: dict[Key, EvalItem], args: argparse.Namespace, sink: TextIO
) -> None:
    limits = Limits(max_iterations=args.max_iterations, max_wall_time_s=args.task_timeout)
    trajectories = Path(args.trajectory_dir) if args.trajectory_dir else None
    async with contextlib.AsyncExitStack() as stack:
        if mode == "served":
            spec = await stack.enter_async_context(served_model(args))
            window = args.served_ctx
        else:
            server = await stack.enter_async_context(LocalModelServer())
            spec, window = server.spec, server.spec.context_window or 32_768
        config = EngineConfig(
            model=spec if mode == "served" else None, limits=limits, trajectory_dir=trajectories
        )
        engine = await stack.enter_async_context(Engine(config))
        client = ModelClient(CallScheduler(max_retries=0), timeout_s=args.base_timeout)
        commit = (git_commit() or "")[:12]
        for key in todo:
            bench, length, _, method, index = key
            item = items[key]
            if method == "rlm":
                run = await run_rlm(engine, item)
            else:
                run = await run_base(client, spec, item, window)
            if run.get("error"):
                # The run could not finish (the model server went away, the kernel died): not
                # a score of the model. Left out of the results, so the next run retries it.
                print(f"{bench} {mode} {method} #{index}: not recorded, {run['error']}",
                      file=sys.stderr, flush=True)  # fmt: skip
                continue
            benchmark = get_benchmark(BENCHES[bench][0])
            outcome = Outcome(
                bench, length, mode, method, index,
                float(benchmark.score(item, run["answer"])),
                round(run["wall_s"], 1), run["turns"],
                engine.profile.name if method == "rlm" else "-", run["detail"], commit,
                run["answer"],
            )  # fmt: skip
            sink.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
            sink.flush()
            print(
                f"{bench} {_label(length, bench)} {mode} {method} #{index} "
                f"score={outcome.score:g} {outcome.wall_s:.1f}s turns={outcome.turns} "
                f"profile={outcome.profile} {outcome.detail}",
                file=sys.stderr,
                flush=True,
            )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def main(args: argparse.Namespace) -> int:
    benches, modes, methods = _split(args.benches), _split(args.modes), _split(args.methods)
    for given, allowed, flag in (
        (benches, BENCHES, "--benches"),
        (modes, MODES, "--modes"),
        (methods, METHODS, "--methods"),
    ):
        if not given or set(given) - set(allowed):
            raise SystemExit(f"{flag} takes a comma list of {', '.join(allowed)}")
    if not 0 <= args.first < args.n:
        raise SystemExit(f"--first must be at least 0 and less than --n ({args.n})")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = load_outcomes(results)
    items: dict[Key, EvalItem] = {}
    wanted: list[Key] = []
    for bench in benches:
        name, unit, default_lengths = BENCHES[bench]
        lengths = [int(x) for x in _split(args.lengths)] if args.lengths else default_lengths
        for length in lengths:
            generated = get_benchmark(name).items(length, args.n, args.seed, unit)  # type: ignore[arg-type]
            for index, item in enumerate(generated):
                if index < args.first:
                    continue
                for mode in modes:
                    for method in methods:
                        key = (bench, length, mode, method, index)
                        items[key] = item
                        wanted.append(key)
    missing = [k for k in wanted if k not in done]
    print(
        f"{len(wanted) - len(missing)} of {len(wanted)} tasks already in {results}; "
        f"running {0 if args.report_only else len(missing)}",
        file=sys.stderr,
    )
    if not args.report_only:
        with open_results(results) as sink:
            for mode in modes:
                todo = [k for k in missing if k[2] == mode]
                if todo:
                    await run_mode(mode, todo, items, args, sink)
        done = load_outcomes(results)
    measured = [done[k] for k in wanted if k in done]
    print(report(measured, wanted))
    data = {"outcomes": str(results), "rows": summarize(measured, wanted)}
    summary_path = Path(args.summary) if args.summary else None
    print(f"wrote {write_results('anymodel', data, summary_path)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benches", default="sniah,oolong,pairs")
    parser.add_argument("--modes", default="served,embedded")
    parser.add_argument("--methods", default="rlm,base")
    parser.add_argument("--lengths", default="", help="override each bench's default lengths")
    parser.add_argument("--n", type=int, default=10, help="items per bench and length")
    parser.add_argument(
        "--first",
        type=int,
        default=0,
        help="skip the items before this index (the items are the same for a seed: a later "
        "sitting can take up where an earlier one's results file ended)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iterations", type=int, default=12)
    parser.add_argument("--task-timeout", type=float, default=900.0, help="seconds per RLM task")
    parser.add_argument("--base-timeout", type=float, default=3600.0, help="seconds per base call")
    parser.add_argument("--port", type=int, default=SERVED_PORT, help="served mode's port")
    parser.add_argument("--served-ctx", type=int, default=32_768, help="served context, tokens")
    parser.add_argument("--threads", type=int, default=2, help="served model's CPU threads")
    parser.add_argument(
        "--model-file", default=None, help="GGUF to serve (default: the pulled one)"
    )
    parser.add_argument("--trajectory-dir", default=None)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results", default="out/bench-anymodel/outcomes.jsonl")
    parser.add_argument(
        "--summary", default=None, help="summary JSON (default out/bench/anymodel.json)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-internal":
        internal = argparse.ArgumentParser()
        internal.add_argument("--port", type=int)
        internal.add_argument("--ctx", type=int)
        internal.add_argument("--threads", type=int)
        opts = internal.parse_args(sys.argv[3:])
        sys.exit(_serve(sys.argv[2], opts.port, opts.ctx, opts.threads))
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and the served model
    sys.exit(anyio.run(main, parse_args()))
