"""Ceilings and growth: how start-up, cells and memory change with the number of live sandboxes.

    make bench-growth            # levels 1,5,10,20,40 (a few minutes; starts up to 40 sandboxes)
    python benchmarks/bench_growth.py --levels 1,5 --probes 2   # a quick look

Live sandboxes are started one by one and kept idle. At each level (``--levels``) it measures,
with that many sandboxes alive:

* cold start of one more sandbox to its first cell (``--probes`` of them, p50), and the warm
  start (claim from the warm pool, inject a context, first cell) when the pool is available;
* the trivial cell ``x = 1`` in one live sandbox (p50 of ``--cells``), and the same cell run in
  every live sandbox at once (p50 over the sandboxes);
* memory: the host's used memory (MemTotal - MemAvailable) over the baseline per live
  sandbox, and each container's own cgroup usage (Docker's stats, page cache excluded, the
  median of up to 5 containers), idle and busy. Busy means every live sandbox holds the working
  set of a typical analysis cell (``BUSY_CELL``: numpy imported, 16 MB of floats, a word count
  over a 3.6 MB string); the cell's data is freed again before the next level;
* the orchestrator's open file descriptors and the host's threads per live sandbox.

From those come the ceilings: how many sandboxes fit in the host's available memory idle and
busy, how many fit if every one used its whole memory limit, and how many the orchestrator's
file-descriptor limit and the host's thread limit allow; the first to give out is reported.
``--ramp-to N`` goes on starting sandboxes after the last level until one fails, the host's
available memory falls under ``--min-free-mb``, or N are alive (what actually gave out).

Prints a table, writes ``out/bench/growth.json`` and a plot ``out/bench/growth.png``
(matplotlib, the ``bench`` extra). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sandbox import cold_starts, host_used_mb, pool_available  # noqa: E402
from benchmarks.results import DEFAULT_DIR, summary, write_results  # noqa: E402
from engine.interrupts import stop_on_sigterm  # noqa: E402
from engine.sandbox import (  # noqa: E402
    Sandbox,
    SandboxConfig,
    docker_api,
)

BUSY_CELL = (
    "import collections, re\nimport numpy as np\n"
    "_busy = np.random.rand(2_000_000)\n"
    "_words = collections.Counter(re.findall(r'\\w+', 'lorem ipsum dolor ' * 200_000))\n"
    "len(_words)"
)
FREE_CELL = "del _busy, _words\nimport gc\ngc.collect()"


def meminfo_mb() -> dict[str, float]:
    values: dict[str, float] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) / 1024
    return values


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def host_threads() -> int:
    # /proc/loadavg: "0.00 0.01 0.05 1/345 12345": the 4th field is runnable/total threads.
    with open("/proc/loadavg") as handle:
        return int(handle.read().split()[3].split("/")[1])


def threads_max() -> int:
    limits = []
    for name in ("/proc/sys/kernel/threads-max", "/proc/sys/kernel/pid_max"):
        try:
            limits.append(int(Path(name).read_text()))
        except (OSError, ValueError):
            continue
    return min(limits) if limits else 0


def _proc_value(pid: str, name: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{name}") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):  # gone, or not ours to read
        pass
    return 0


def host_usage(container_id: str) -> tuple[float, int]:
    """What one sandbox costs the host: the proportional set size in MB (shared pages split
    between their users) and the threads of every process that serves it: Docker's shim
    (``-id <id>`` on its command line), with gVisor the sandbox (Sentry) and gofer (the id in
    their paths), and the processes in its cgroup."""
    pss_kb = threads = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if container_id.encode() in cmdline or container_id in cgroup:
            pss_kb += _proc_value(pid, "smaps_rollup", "Pss:")
            threads += _proc_value(pid, "status", "Threads:")
    return pss_kb / 1024, threads


def sandbox_usage(task_id: str) -> dict[str, float | None]:
    """A sandbox's cgroup memory without page cache (as ``docker stats`` shows it), host PSS
    and threads."""
    try:
        container = docker_api.client().containers.get(f"rlm-{task_id}")
        stats = container.stats(stream=False, one_shot=True)["memory_stats"]
    except Exception:  # a benchmark reports what it can; the container may be gone
        return {"cgroup": None, "host_pss": None, "threads": None}
    pss, threads = host_usage(container.id)
    usage = stats.get("usage")
    detail = stats.get("stats", {})
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return {
        "cgroup": None if usage is None else (usage - cache) / (1 << 20),
        "host_pss": pss or None,
        "threads": threads or None,
    }


async def sandboxes_usage(sandboxes: list[Sandbox], sample: int = 5) -> dict[str, float | None]:
    """Medians of :func:`sandbox_usage` over up to ``sample`` of the live sandboxes."""
    picked = sandboxes[:: max(1, len(sandboxes) // sample)][:sample]
    rows = [await anyio.to_thread.run_sync(sandbox_usage, s.task_id) for s in picked]
    out: dict[str, float | None] = {}
    for key in ("cgroup", "host_pss", "threads"):
        known = [v for row in rows if (v := row[key]) is not None]
        out[key] = round(statistics.median(known), 1) if known else None
    return out


# --- measurements at one level -----------------------------------------------------------------


async def warm_probe(config: SandboxConfig, n: int) -> list[float] | None:
    if not pool_available():
        return None
    from benchmarks.warm import warm_start_times

    return await warm_start_times(config, n)


async def one_cell_times(sandbox: Sandbox, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await sandbox.execute("x = 1")
        times.append(time.perf_counter() - started)
    return times


async def all_at_once(sandboxes: list[Sandbox], code: str) -> list[float]:
    """Run ``code`` in every sandbox at the same time; each one's latency."""
    times: list[float] = []

    async def one(sandbox: Sandbox) -> None:
        started = time.perf_counter()
        result = await sandbox.execute(code, cell_timeout_s=600)
        times.append(time.perf_counter() - started)
        if result.error:
            raise RuntimeError(f"benchmark cell failed in {sandbox.task_id}: {result.error}")

    async with anyio.create_task_group() as group:
        for sandbox in sandboxes:
            group.start_soon(one, sandbox)
    return times


async def measure_level(
    config: SandboxConfig, live: list[Sandbox], baseline: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    n = len(live)
    await anyio.sleep(args.settle)  # let the last start's page cache and threads settle
    idle_host = (host_used_mb() - baseline["host_used_mb"]) / n
    row: dict[str, Any] = {
        "live": n,
        "idle_host_mb_per_sandbox": round(idle_host, 1),
        "idle": await sandboxes_usage(live),
        "fds_per_sandbox": round((open_fds() - baseline["fds"]) / n, 1),
        "threads_per_sandbox": round((host_threads() - baseline["threads"]) / n, 1),
    }
    row["cold_start_s"] = summary((await cold_starts(config, args.probes))[0])
    warm = await warm_probe(config, args.probes)
    row["warm_start_s"] = summary(warm) if warm else None
    row["cell_ms"] = summary(await one_cell_times(live[0], args.cells), 1000)
    row["cell_all_at_once_ms"] = summary(await all_at_once(live, "x = 1"), 1000)
    busy_times = await all_at_once(live, BUSY_CELL)
    row["busy_cell_all_at_once_s"] = summary(busy_times)
    row["busy_host_mb_per_sandbox"] = round((host_used_mb() - baseline["host_used_mb"]) / n, 1)
    row["busy"] = await sandboxes_usage(live)
    await all_at_once(live, FREE_CELL)
    return row


def ceilings(
    rows: list[dict[str, Any]], baseline: dict[str, float], config: SandboxConfig
) -> dict[str, Any]:
    """How many sandboxes each resource allows, from the largest level measured."""
    last = rows[-1]
    available = baseline["mem_available_mb"]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def fit(total: float, each: float | None) -> int | None:
        return int(total // each) if each and each > 0 else None

    # What the sandboxes' own processes hold (host PSS, and their cgroup's count) is what
    # other programs on a shared host cannot blur; the host's used-memory delta (noisier) is
    # reported beside them.
    limits = {
        "memory_idle": fit(available, last["idle"]["host_pss"]),
        "memory_busy": fit(available, last["busy"]["host_pss"]),
        "memory_idle_cgroup": fit(available, last["idle"]["cgroup"]),
        "memory_busy_cgroup": fit(available, last["busy"]["cgroup"]),
        "memory_idle_host_delta": fit(available, last["idle_host_mb_per_sandbox"]),
        "memory_busy_host_delta": fit(available, last["busy_host_mb_per_sandbox"]),
        "memory_every_sandbox_at_its_limit": fit(available, config.memory_bytes / (1 << 20)),
        "orchestrator_open_files": fit(nofile - baseline["fds"], last["fds_per_sandbox"]),
        "host_threads": fit(threads_max() - baseline["threads"], last["busy"]["threads"]),
    }
    # Each sandbox at its full memory limit is a worst case, not a measurement.
    primary = ("memory_idle", "memory_busy", "orchestrator_open_files", "host_threads")
    known = {k: limits[k] for k in primary if limits[k] is not None}
    first = min(known, key=lambda k: known[k]) if known else None
    return {
        "mem_available_mb": round(available),
        "sandbox_memory_limit_mb": config.memory_bytes >> 20,
        "open_files_limit": nofile,
        "threads_limit": threads_max(),
        "estimated_max_sandboxes": limits,
        "first_to_give_out": first,
        "first_to_give_out_at": known.get(first) if first else None,
    }


async def ramp(
    config: SandboxConfig, stack: AsyncExitStack, live: list[Sandbox], args: argparse.Namespace
) -> dict[str, Any]:
    """Start sandboxes until one fails, memory runs short or ``--ramp-to`` are alive."""
    reason = f"reached --ramp-to {args.ramp_to}"
    times = []
    while len(live) < args.ramp_to:
        if meminfo_mb()["MemAvailable"] < args.min_free_mb:
            reason = f"host available memory under {args.min_free_mb} MB"
            break
        started = time.perf_counter()
        try:
            sandbox = await stack.enter_async_context(Sandbox(config))
            await sandbox.execute("1")
        except Exception as exc:  # what gave out is the measurement
            reason = f"start number {len(live) + 1} failed: {type(exc).__name__}: {exc}"
            break
        times.append(time.perf_counter() - started)
        live.append(sandbox)
    return {
        "alive": len(live),
        "stopped_because": reason,
        "last_start_s": round(times[-1], 3) if times else None,
        "host_available_mb": round(meminfo_mb()["MemAvailable"]),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    def p50(block: dict[str, Any] | None, scale: float = 1.0) -> str:
        return "-" if not block or not block.get("n") else f"{block['p50'] * scale:.0f}"

    head = (
        f"{'live':>5} {'cold ms':>8} {'warm ms':>8} {'cell ms':>8} {'all cells ms':>13} "
        f"{'idle MB':>8} {'busy MB':>8} {'cgroup idle/busy MB':>20}"
    )
    print(head + "   (idle/busy MB: host PSS per sandbox)")
    for row in rows:
        idle, busy = row["idle"], row["busy"]
        cgroup = f"{idle['cgroup'] or '-'}/{busy['cgroup'] or '-'}"
        print(
            f"{row['live']:>5} {p50(row['cold_start_s'], 1000):>8} "
            f"{p50(row['warm_start_s'], 1000):>8} {row['cell_ms']['p50']:>8.2f} "
            f"{row['cell_all_at_once_ms']['p50']:>13.1f} {idle['host_pss'] or '-':>8} "
            f"{busy['host_pss'] or '-':>8} {cgroup:>20}"
        )


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Start-up, cell time and memory per sandbox against the number of live sandboxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = [row["live"] for row in rows]

    def series(key: str, scale: float = 1.0) -> list[float | None]:
        return [
            row[key]["p50"] * scale if row.get(key) and row[key].get("n") else None for row in rows
        ]

    fig, (starts, cells, memory) = plt.subplots(1, 3, figsize=(13, 3.8))
    starts.plot(live, series("cold_start_s", 1000), "o-", label="cold start")
    warm = series("warm_start_s", 1000)
    if any(v is not None for v in warm):
        starts.plot(live, warm, "s-", label="warm start (pool)")
    starts.set(title="start to first cell, p50", xlabel="live sandboxes", ylabel="ms")
    starts.set_yscale("log")
    cells.plot(live, series("cell_ms"), "o-", label="one sandbox")
    cells.plot(live, series("cell_all_at_once_ms"), "s-", label="all at once")
    cells.set(title="trivial cell, p50", xlabel="live sandboxes", ylabel="ms")
    cells.set_yscale("log")
    for state, marker in (("idle", "o"), ("busy", "s")):
        for source, style in (("host_pss", "-"), ("cgroup", ":")):
            values = [r[state][source] for r in rows]
            memory.plot(live, values, marker + style, label=f"{state} ({source})")
    memory.set(title="memory per sandbox", xlabel="live sandboxes", ylabel="MB")
    memory.set_ylim(bottom=0)
    for axis in (starts, cells, memory):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


async def main(args: argparse.Namespace) -> None:
    if args.replot:
        source = args.json or DEFAULT_DIR / "growth.json"
        rows = json.loads(source.read_text())["levels"]
        print(f"wrote {plot(rows, args.replot)}")
        return
    config = SandboxConfig.from_env(**({"runtime": args.runtime} if args.runtime else {}))
    levels = sorted(set(args.levels))
    baseline = {
        "host_used_mb": host_used_mb(),
        "mem_available_mb": meminfo_mb()["MemAvailable"],
        "fds": open_fds(),
        "threads": host_threads(),
    }
    rows: list[dict[str, Any]] = []
    ramp_start_s: list[float] = []
    runtime = None
    ramped = None
    async with AsyncExitStack() as stack:
        live: list[Sandbox] = []
        for level in levels:
            while len(live) < level:
                started = time.perf_counter()
                sandbox = await stack.enter_async_context(Sandbox(config))
                await sandbox.execute("1")
                ramp_start_s.append(time.perf_counter() - started)
                runtime = sandbox.runtime
                live.append(sandbox)
            row = await measure_level(config, live, baseline, args)
            rows.append(row)
            print(f"level {level}: measured", flush=True)
        limits = ceilings(rows, baseline, config)
        if args.ramp_to > len(live):
            ramped = await ramp(config, stack, live, args)
    report = {
        "runtime": runtime,
        "levels": rows,
        "ceilings": limits,
        "ramp": ramped,
        "start_while_ramping_s": [round(x, 3) for x in ramp_start_s],
        "busy_cell": BUSY_CELL,
    }
    print_table(rows)
    print(f"ceilings: {limits}")
    if ramped:
        print(f"ramp: {ramped}")
    out = args.json or DEFAULT_DIR / "growth.json"
    print(f"wrote {write_results('growth', report, out)}")
    print(f"wrote {plot(rows, out.with_suffix('.png'))}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels", type=lambda t: [int(x) for x in t.split(",")], default=[1, 5, 10, 20, 40]
    )
    parser.add_argument("--probes", type=int, default=3, help="cold/warm starts timed per level")
    parser.add_argument("--cells", type=int, default=50, help="trivial cells timed per level")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--runtime", default=None, help="OCI runtime (runsc, runc)")
    parser.add_argument("--ramp-to", type=int, default=0, help="then start more until this many")
    parser.add_argument("--min-free-mb", type=int, default=2048)
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/growth.json")
    parser.add_argument(
        "--replot", type=Path, default=None, help="only draw --json's levels into this PNG"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and model servers
    anyio.run(main, parse_args())
