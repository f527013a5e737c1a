"""Sandbox benchmark, ours beside the peer in the same run: start-up, cells, context, children.

Run with ``make bench-sandbox``. Prints numbers, asserts nothing, and writes them all to
``out/bench/sandbox.json`` (``--json``). Measured, on this machine in this run:

* ours: cold start to the first executed cell; warm start (a sandbox claimed from the warm
  pool, the task's context injected, first cell run) when the pool is available; the trivial
  cell ``x = 1`` with no context, 1 MB and 100 MB of context; the time until a context of each
  size (and 1 GB) is usable; ``--concurrent`` sandboxes started at once; an ``rlm_query``
  child's start-up (replayed models), without and with the pool.
* the peer: the official ``rlms`` package's ``DockerREPL`` (alexzhang13/rlm, PyPI ``rlms``,
  version ``benchmarks/peer.py:PEER_VERSION``), installed by this benchmark into its own venv
  (``out/bench/peer-venv``) and run there as published: its start-up and the same trivial cell
  with no context, 1 MB and 100 MB of context. The one adaptation to run it offline: its image
  is built from OUR sandbox image plus ``requests`` and ``dill`` and runs as root, like its
  default ``python:3.11-slim`` (details in ``benchmarks/peer.py``). It runs under Docker's
  default runtime (its own ``docker run`` flags); ours under our default (gVisor when Docker
  has ``runsc``, else runc; ``--runtime`` picks one) and, like for like, also under runc (cold
  start and cell; ``--no-runc-too`` skips that). ``--no-peer`` skips the peer.

Targets on a 2-core machine: cold start p50 <= 1.5 s; warm start <= 1/10 of cold (aim
< 50 ms); trivial cell p50 <= 5 ms and >= 20x faster than the peer's with no context, >= 1000x
at 100 MB; a 1 GB context usable in <= 10 s with the orchestrator's RSS growing < 50 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peer  # noqa: E402
from benchmarks.results import ratio, summary, write_results  # noqa: E402
from engine.interrupts import stop_on_sigterm  # noqa: E402
from engine.sandbox import Sandbox, SandboxConfig  # noqa: E402

LINE = ("The quick brown fox jumps over the lazy dog. " * 2)[:89] + "\n"


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def host_used_mb() -> float:
    values: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0])
    return (values["MemTotal"] - values["MemAvailable"]) / 1024


def write_context(folder: Path, size_mb: int) -> Path:
    """A text file of ``size_mb`` MiB of filler lines (the peer builds the same text)."""
    path = folder / f"context-{size_mb}mb.txt"
    block = LINE * ((1 << 20) // len(LINE) + 1)
    with path.open("w") as handle:
        left = size_mb << 20
        while left > 0:
            piece = block[:left]
            handle.write(piece)
            left -= len(piece)
    return path


def pool_available() -> bool:
    """Whether this checkout has the warm pool (``engine.sandbox.pool``) and the benchmark's
    use of it (``benchmarks/warm.py``)."""
    found = importlib.util.find_spec
    return found("engine.sandbox.pool") is not None and found("benchmarks.warm") is not None


# --- ours --------------------------------------------------------------------------------------


async def cold_starts(config: SandboxConfig, n: int) -> tuple[list[float], str | None]:
    times, runtime = [], None
    for _ in range(n):
        started = time.perf_counter()
        async with Sandbox(config) as sandbox:
            await sandbox.execute("1")
            times.append(time.perf_counter() - started)
            runtime = sandbox.runtime
    return times, runtime


async def warm_starts(config: SandboxConfig, n: int) -> list[float] | None:
    """Claim from a warm pool, inject a small context, run the first cell; None: no pool."""
    if not pool_available():
        return None
    from benchmarks.warm import warm_start_times

    return await warm_start_times(config, n)


async def cell_times(sandbox: Sandbox, n: int) -> list[float]:
    for _ in range(20):
        await sandbox.execute("1")
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await sandbox.execute("x = 1")
        times.append(time.perf_counter() - started)
        if result.error:
            raise RuntimeError(f"the benchmark cell failed: {result.error}")
    return times


async def with_context(
    config: SandboxConfig, size_mb: int, cells: int, folder: Path
) -> dict[str, Any]:
    """Time until a ``size_mb`` context is usable, then the trivial cell with it loaded."""
    path = write_context(folder, size_mb) if size_mb else None
    rss_before = rss_mb()
    started = time.perf_counter()
    try:
        async with Sandbox(config, context=path) as sandbox:
            result = await sandbox.execute("len(context)" if path else "1")
            usable = time.perf_counter() - started
            rss_growth = rss_mb() - rss_before
            load = sandbox.context_info.load_seconds if sandbox.context_info else None
            times = await cell_times(sandbox, cells) if cells else []
    finally:
        if path is not None:
            path.unlink()
    return {
        "usable_s": round(usable, 3),
        "kernel_load_s": None if load is None else round(load, 3),
        "len": result.result,
        "orchestrator_rss_growth_mb": round(rss_growth, 1),
        "cell_ms": summary(times, 1000),
    }


async def concurrent(config: SandboxConfig, n: int) -> dict[str, float]:
    peak = baseline = host_used_mb()
    done = anyio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, host_used_mb())
            await anyio.sleep(0.05)

    async def one() -> None:
        async with Sandbox(config) as sandbox:
            await sandbox.execute("import numpy; numpy.arange(10).sum()")
            await anyio.sleep(0.5)

    started = time.perf_counter()
    async with anyio.create_task_group() as outer:
        outer.start_soon(sample)
        async with anyio.create_task_group() as group:
            for _ in range(n):
                group.start_soon(one)
        done.set()
    return {
        "sandboxes": n,
        "total_s": round(time.perf_counter() - started, 2),
        "peak_host_memory_growth_mb": round(peak - baseline),
    }


CHILD_CELL = """
import json, time
took = []
for i in range({n}):
    # A child's own model calls take seconds: the pool refills meanwhile (one sandbox at a
    # time, a cold start each), which a shorter pause on a loaded machine does not allow.
    time.sleep({pause})
    t = time.perf_counter(); rlm_query(f"child {{i}}"); took.append(time.perf_counter() - t)
answer['content'] = json.dumps(took); answer['ready'] = True
"""


async def child_starts(
    config: SandboxConfig, n: int, warm: bool, pause: float
) -> dict[str, Any] | None:
    """``n`` sequential ``rlm_query`` children (replayed models, ``pause`` seconds apart,
    untimed): their sandbox start-up and the whole call as the parent's cell sees it.
    ``warm``: with the engine's warm pool (None when this checkout has none), else without."""
    from engine import Engine, EngineConfig, Limits
    from engine.models import Cassette, ModelSpec, ReplayServer

    if warm and not pool_available():
        return None
    child = "```repl\nanswer['content'] = 'ok'\nanswer['ready'] = True\n```"
    entries = [
        {
            "match": {"model": "root"},
            "response": {"content": f"```repl{CHILD_CELL.format(n=n, pause=pause)}```"},
        },
        {"match": {"model": "sub"}, "response": {"content": child}, "repeat": True},
    ]
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        async with ReplayServer(Cassette(entries)) as replay:
            engine_config = EngineConfig(
                model=ModelSpec("openai/root", api_base=replay.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=replay.base_url, api_key="x"),
                limits=Limits(max_iterations=2, max_depth=2, cell_timeout_s=600),
                sandbox=config,
                trajectory_path=Path(tmp) / "t.jsonl",
                cache="off",
            )
            if pool_available():
                from benchmarks.warm import engine_with_pool, engine_without_pool

                choose = engine_with_pool if warm else engine_without_pool
                engine_config = choose(engine_config)
            async with Engine(engine_config) as engine:
                result = await engine.run("bench children", None, events.append)
    if not result.ready:
        raise RuntimeError(f"the child benchmark failed: {result.stop_reason} {result.error}")
    starts = [e["startup_s"] for e in events if e["type"] == "sandbox_ready" and e["depth"] == 2]
    return {
        "children": n,
        "sandbox_start_s": summary(starts),
        "rlm_query_call_s": summary(json.loads(result.answer)),
    }


# --- report ------------------------------------------------------------------------------------


def _p50(block: dict[str, Any] | None, key: str) -> float | None:
    if not block or not block.get(key) or not block[key].get("n"):
        return None
    return float(block[key]["p50"])


def build_report(ours: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers of both sides, the headline keys and the ratios against the targets."""
    cold = ours["cold_start_s"]
    warm = ours.get("warm_start_s")
    cell_by_mb = {"0": _p50(ours, "cell_ms")}
    cell_by_mb.update({mb: _p50(block, "cell_ms") for mb, block in ours["context"].items()})
    report: dict[str, Any] = {
        "runtime": ours["runtime"],
        "cold_start_p50_s": cold.get("p50"),
        "warm_start_p50_s": warm.get("p50") if warm else None,
        "cell_p50_ms": ours["cell_ms"].get("p50"),
        "cell_p50_ms_by_context_mb": {mb: v for mb, v in cell_by_mb.items() if v is not None},
        "peer_start_p50_s": None,
        "peer_cell_p50_ms": None,
        "peer_cell_p50_ms_by_context_mb": {},
        **ours,
    }
    report["warm_over_cold"] = ratio(report["warm_start_p50_s"], report["cold_start_p50_s"], 3)
    if theirs is not None:
        peer_start = summary(theirs["start_s"])
        by_mb = {
            mb: {
                "usable_s": round(block["usable_s"], 3),
                "cell_ms": summary(block["cell_s"], 1000),
            }
            for mb, block in theirs["by_context_mb"].items()
        }
        report["peer"] = {
            "package": f"rlms=={theirs.get('version', peer.PEER_VERSION)}",
            "image": theirs.get("image"),
            "start_s": peer_start,
            "cleanup_s": summary(theirs["cleanup_s"]),
            "context": by_mb,
        }
        report["peer_start_p50_s"] = peer_start.get("p50")
        report["peer_cell_p50_ms_by_context_mb"] = {
            mb: block["cell_ms"]["p50"] for mb, block in by_mb.items() if block["cell_ms"]["n"]
        }
        report["peer_cell_p50_ms"] = report["peer_cell_p50_ms_by_context_mb"].get("0")
        report["cell_speedup_by_context_mb"] = {
            mb: ratio(theirs_ms, cell_by_mb.get(mb))
            for mb, theirs_ms in report["peer_cell_p50_ms_by_context_mb"].items()
        }
        report["start_speedup"] = ratio(report["peer_start_p50_s"], report["cold_start_p50_s"])
    speedups = report.get("cell_speedup_by_context_mb", {})
    report["targets"] = {
        "warm_start_at_most_tenth_of_cold": _met(report["warm_over_cold"], 0.1, below=True),
        "warm_start_under_50ms": _met(report["warm_start_p50_s"], 0.05, below=True),
        "cell_20x_peer_no_context": _met(speedups.get("0"), 20, below=False),
        "cell_1000x_peer_100mb": _met(speedups.get("100"), 1000, below=False),
    }
    return report


def _met(value: float | None, bound: float, *, below: bool) -> bool | None:
    if value is None:
        return None
    return value <= bound if below else value >= bound


def print_report(report: dict[str, Any]) -> None:
    def fmt(value: float | None, unit: str, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f} {unit}"

    cold = report["cold_start_s"]
    print(f"runtime: ours {report['runtime'] or 'docker default'}, peer docker default (runc)")
    print(
        f"cold start to first cell (n={cold['n']}): p50 {cold['p50']:.3f} s, "
        f"p95 {cold['p95']:.3f} s"
    )
    warm = report.get("warm_start_s")
    if warm:
        print(
            f"warm start (pool claim + context + first cell, n={warm['n']}): p50 "
            f"{warm['p50'] * 1000:.1f} ms, p95 {warm['p95'] * 1000:.1f} ms "
            f"({report['warm_over_cold']} of cold; target <= 0.1, aim < 50 ms)"
        )
    else:
        print("warm start: no warm pool in this checkout (engine.sandbox.pool)")
    for mb, block in report["context"].items():
        print(
            f"context {int(mb):>5} MB: usable after {block['usable_s']:.2f} s "
            f"(kernel load {block['kernel_load_s'] or 0:.2f} s), orchestrator RSS "
            f"+{block['orchestrator_rss_growth_mb']:.1f} MB, trivial cell p50 "
            f"{fmt(_p50(block, 'cell_ms'), 'ms')}"
        )
    conc = report.get("concurrent")
    if conc:
        print(
            f"{conc['sandboxes']} sandboxes started concurrently: total {conc['total_s']:.2f} s, "
            f"peak host memory +{conc['peak_host_memory_growth_mb']} MB"
        )
    runc = report.get("runc")
    if runc:
        print(
            f"ours under runc: cold start p50 {runc['cold_start_s']['p50']:.3f} s, trivial cell "
            f"p50 {runc['cell_ms']['p50']:.2f} ms"
        )
    for label in ("child_cold", "child_warm"):
        block = report.get(label)
        if block:
            print(
                f"rlm_query child ({label.split('_')[1]}, n={block['children']}): sandbox start "
                f"p50 {block['sandbox_start_s']['p50']:.3f} s, whole call p50 "
                f"{block['rlm_query_call_s']['p50']:.3f} s"
            )
    if "peer" not in report:
        print("peer: skipped (--no-peer)")
        return
    print()
    print(f"side by side with {report['peer']['package']} DockerREPL (same machine, same run):")
    print(f"{'':28} {'ours':>12} {'rlms':>12} {'ratio':>9}")
    print(
        f"{'start to first cell, p50':28} {fmt(report['cold_start_p50_s'], 's'):>12} "
        f"{fmt(report['peer_start_p50_s'], 's'):>12} {report['start_speedup'] or '-':>8}x"
    )
    for mb, theirs in report["peer_cell_p50_ms_by_context_mb"].items():
        ours_ms = report["cell_p50_ms_by_context_mb"].get(mb)
        speed = report["cell_speedup_by_context_mb"].get(mb)
        print(
            f"{f'cell x = 1, {mb} MB context':28} {fmt(ours_ms, 'ms'):>12} "
            f"{fmt(theirs, 'ms', 0):>12} {speed or '-':>8}x"
        )
    runc = report.get("runc")
    if runc:
        print(
            f"{'ours under runc: start, cell':28} {runc['cold_start_s']['p50']:.2f} s, "
            f"{runc['cell_ms']['p50']:.2f} ms"
        )
    print(f"targets: {report['targets']}")


async def measure_ours(args: argparse.Namespace, config: SandboxConfig) -> dict[str, Any]:
    cold, runtime = await cold_starts(config, args.cold)
    warm = await warm_starts(config, args.warm)
    ours: dict[str, Any] = {
        "runtime": runtime,
        "cold_start_s": summary(cold),
        "warm_start_s": summary(warm) if warm else None,
    }
    async with Sandbox(config) as sandbox:
        ours["cell_ms"] = summary(await cell_times(sandbox, args.cells), 1000)
    ours["context"] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("RLM_BENCH_TMP")) as tmp:
        for size in sorted({*args.context_mb, *args.peer_context_mb} - {0}):
            cells = args.context_cells if size in args.peer_context_mb else 0
            ours["context"][str(size)] = await with_context(config, size, cells, Path(tmp))
    if args.runc_too and runtime != "runc":
        # The peer runs under Docker's default runtime (runc): ours under it too, for a
        # like-for-like row beside ours under gVisor.
        runc = dataclasses.replace(config, runtime="runc")
        runc_cold, _ = await cold_starts(runc, max(3, args.cold // 2))
        async with Sandbox(runc) as sandbox:
            runc_cells = await cell_times(sandbox, max(50, args.cells // 2))
        ours["runc"] = {"cold_start_s": summary(runc_cold), "cell_ms": summary(runc_cells, 1000)}
    if args.concurrent:
        ours["concurrent"] = await concurrent(config, args.concurrent)
    if args.children:
        pause = args.child_pause
        ours["child_cold"] = await child_starts(config, args.children, False, pause)
        ours["child_warm"] = await child_starts(config, args.children, True, pause)
    return ours


def measure_peer(args: argparse.Namespace, image: str) -> dict[str, Any]:
    python = peer.ensure_venv(version=args.peer_version)
    peer_image = peer.ensure_image(image)
    cells = [
        args.peer_cells if mb == 0 else max(3, args.peer_cells // (1 + mb))
        for mb in args.peer_context_mb
    ]
    theirs = peer.run_peer(
        python, peer_image, starts=args.peer_starts, sizes_mb=args.peer_context_mb, cells=cells
    )
    theirs["image"] = peer_image
    theirs["version"] = args.peer_version
    return theirs


async def main(args: argparse.Namespace) -> None:
    config = SandboxConfig.from_env(**({"runtime": args.runtime} if args.runtime else {}))
    ours = await measure_ours(args, config)
    theirs = (
        None if args.no_peer else await anyio.to_thread.run_sync(measure_peer, args, config.image)
    )
    report = build_report(ours, theirs)
    print_report(report)
    print(f"wrote {write_results('sandbox', report, args.json)}")


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=20, help="cold starts to time")
    parser.add_argument("--warm", type=int, default=20, help="warm starts to time (pool)")
    parser.add_argument("--cells", type=int, default=500, help="trivial cells, no context")
    parser.add_argument("--context-cells", type=int, default=200, help="cells per context size")
    parser.add_argument("--context-mb", type=_sizes, default=[1, 100, 1024])
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--children", type=int, default=5, help="rlm_query children to time")
    parser.add_argument(
        "--child-pause", type=float, default=8.0, help="seconds between children (untimed)"
    )
    parser.add_argument("--runtime", default=None, help="OCI runtime for ours (runsc, runc)")
    parser.add_argument(
        "--no-runc-too",
        dest="runc_too",
        action="store_false",
        help="skip ours under runc (measured beside gVisor by default: the peer runs runc)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the rlms DockerREPL")
    parser.add_argument("--peer-version", default=peer.PEER_VERSION)
    parser.add_argument("--peer-starts", type=int, default=5)
    parser.add_argument("--peer-cells", type=int, default=20, help="peer cells, no context")
    parser.add_argument("--peer-context-mb", type=_sizes, default=[0, 1, 100])
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/sandbox.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and model servers
    anyio.run(main, parse_args())
