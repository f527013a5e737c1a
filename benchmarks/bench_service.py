"""Service throughput: N replay-driven jobs submitted at once to real `rlm serve` replicas.

    python benchmarks/bench_service.py [--jobs 50] [--max-sandboxes 4] [--setups sqlite,pg1,pg2]

Each job is a real RLM run (real sandbox, real kernel, one cell) whose model calls are
answered by a replay cassette, so the numbers measure the service, admission control and
sandboxes, not a model. Setups: ``sqlite`` one service on its embedded store; ``pg1`` and
``pg2`` one and two replicas (``--max-sandboxes`` each) on a private PostgreSQL cluster, the
jobs submitted round-robin to them. Prints, per setup, jobs per minute, p50/p95 job latency
(submit to end, from the service's own timestamps), queue wait, how the jobs spread over the
replicas and their peak memory; writes ``--json`` (default ``out/bench/service.json``). On
one host, replicas share its CPUs and Docker daemon: the second replica adds admission slots
and a second event loop, not machines. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchmarks.results import write_results
from tests.pg_support import PgCluster
from tests.service_support import API_KEY, Service, code

SETUPS = {"sqlite": 0, "pg1": 1, "pg2": 2}  # setup -> replicas on PostgreSQL (0: SQLite)

CASSETTE = {
    "match": {"model": "root", "contains": "BENCH"},
    "response": {
        "content": code(
            "n = sum('ERROR' in line for line in context.splitlines())\n"
            "answer['content'] = str(n)\nanswer['ready'] = True"
        ),
        "usage": {"prompt_tokens": 500, "completion_tokens": 40},
    },
    "repeat": True,
}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def _every_job(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The key's jobs, page after page (a listing returns at most 100)."""
    listed: list[dict[str, Any]] = []
    after = ""
    while True:
        page = (await client.get(f"/v1/jobs?limit=100{after}")).json()
        listed += page["data"]
        if not page["has_more"]:
            return listed
        after = f"&after={page['last_id']}"


async def run(
    jobs: int, max_sandboxes: int, work: Path, database_url: str | None, replicas: int
) -> dict[str, float | int | dict[str, int]]:
    work.mkdir(parents=True, exist_ok=True)
    cassette = work / "bench.jsonl"
    cassette.write_text(json.dumps(CASSETTE) + "\n")
    shared = ["--database-url", database_url] if database_url else []
    services = [
        Service(
            work / f"data-{index}",
            None,
            "--model",
            "openai/root",
            "--replay",
            str(cassette),
            "--max-sandboxes",
            str(max_sandboxes),
            "--max-jobs-per-key",
            str(jobs),
            *shared,
            env={"RLM_INSTANCE_ID": f"bench-service-{os.getpid()}-{index}"},
        )
        for index in range(max(1, replicas))
    ]
    for index, service in enumerate(services):
        (work / f"data-{index}").mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(service.start)
    try:
        context = "\n".join("ERROR x" if i % 7 == 0 else "INFO y" for i in range(2000))
        headers = {"Authorization": f"Bearer {API_KEY}"}
        clients = [
            httpx.AsyncClient(base_url=service.url, headers=headers, timeout=600)
            for service in services
        ]
        client = clients[0]
        ids: list[str] = []

        async def submit(index: int) -> None:
            body = {"query": f"BENCH {index}: count ERROR lines", "context": context}
            response = await clients[index % len(clients)].post("/v1/jobs", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(jobs):
                tg.start_soon(submit, index)
        submitted = time.perf_counter() - started
        while True:
            listed = await _every_job(client)
            done = [j for j in listed if j["id"] in ids and j["finished_at"] is not None]
            if len(done) == jobs:
                break
            await anyio.sleep(0.25)
        wall = time.perf_counter() - started
        for each in clients:
            await each.aclose()
        spread = runners(database_url, ids, services) if database_url else {"sqlite": jobs}
        ok = [j for j in done if j["status"] == "succeeded" and j["answer"] == str(2000 // 7 + 1)]
        latency = [j["finished_at"] - j["created_at"] for j in done]
        queued = [j["started_at"] - j["created_at"] for j in done if j["started_at"]]
        running = [j["finished_at"] - j["started_at"] for j in done if j["started_at"]]
        span = max(j["finished_at"] for j in done) - min(j["created_at"] for j in done)
        rss = [peak_rss_mib(service.proc.pid) for service in services if service.proc]
        result = {
            "jobs": jobs,
            "correct": len(ok),
            "replicas": len(services),
            "max_sandboxes_each": max_sandboxes,
            "jobs_per_minute": round(jobs / span * 60, 1),
            "latency_p50_s": round(percentile(latency, 0.5), 2),
            "latency_p95_s": round(percentile(latency, 0.95), 2),
            "queue_p50_s": round(percentile(queued, 0.5), 2),
            "run_mean_s": round(statistics.mean(running), 2),
            "peak_rss_mib": round(max(rss), 1),
            "spread": spread,
        }
        print(f"jobs                  {jobs} ({len(ok)} answered correctly)")
        print(f"replicas              {len(services)} x {max_sandboxes} sandboxes")
        print(f"submit all            {submitted:.2f} s")
        print(f"wall (client)         {wall:.2f} s")
        print(f"throughput            {result['jobs_per_minute']} jobs/min")
        print(f"job latency p50 / p95 {result['latency_p50_s']} / {result['latency_p95_s']} s")
        print(f"queue wait p50        {result['queue_p50_s']} s")
        print(f"run time mean         {result['run_mean_s']} s (sandbox start + 1 turn)")
        print(f"jobs per replica      {spread}")
        print(f"peak RSS (largest)    {result['peak_rss_mib']} MiB")
        return result
    finally:
        for service in services:
            await anyio.to_thread.run_sync(service.stop)


def runners(database_url: str, ids: list[str], services: list[Service]) -> dict[str, int]:
    """How many jobs each replica ran (its pid is in the lease owner id)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        owners = [
            row[0]
            for row in conn.execute("SELECT lease_owner FROM jobs WHERE id = ANY(%s)", (ids,))
        ]
    names = {str(s.proc.pid): f"replica-{i}" for i, s in enumerate(services) if s.proc}
    counts: dict[str, int] = {}
    for owner in owners:
        name = names.get(owner.rsplit("-", 2)[1], "unknown") if owner else "none"
        counts[name] = counts.get(name, 0) + 1
    return counts


async def bench(args: argparse.Namespace, work: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    cluster: PgCluster | None = None
    try:
        for setup in args.setups.split(","):
            replicas = SETUPS[setup]
            url = None
            if replicas:
                if cluster is None:
                    cluster = await anyio.to_thread.run_sync(PgCluster().start)
                url = await anyio.to_thread.run_sync(cluster.database)
            print(f"--- {setup} ---", flush=True)
            results[setup] = await run(args.jobs, args.max_sandboxes, work / setup, url, replicas)
    finally:
        if cluster is not None:
            await anyio.to_thread.run_sync(cluster.stop)
    print("--- jobs per minute ---")
    for setup, result in results.items():
        assert isinstance(result, dict)
        print(
            f"{setup:8} {result['jobs_per_minute']:>8} jobs/min  ({result['replicas']} replica(s))"
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--max-sandboxes", type=int, default=4, help="per replica")
    parser.add_argument("--setups", default="sqlite,pg1,pg2", help=f"of {', '.join(SETUPS)}")
    parser.add_argument("--json", type=Path, default=Path("out/bench/service.json"))
    args = parser.parse_args()
    unknown = [s for s in args.setups.split(",") if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup {unknown[0]!r}; choose from {', '.join(SETUPS)}")
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        results = anyio.run(bench, args, Path(tmp))
    print(f"wrote {write_results('service', results, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
