"""Overhead of the model client: litellm + scheduler + ledger against the local replay server.

Prints per-call latency of sequential calls (client vs. raw httpx to the same server) and the
throughput of concurrent calls under the scheduler's global limit. Run:

    .venv/bin/python benchmarks/bench_models.py [--calls 100] [--concurrent 300] [--limit 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import summary, write_results
from engine.interrupts import stop_on_sigterm
from engine.models import (
    CallScheduler,
    Cassette,
    ModelClient,
    ModelSpec,
    ReplayServer,
    UsageLedger,
)


async def bench(calls: int, concurrent: int, limit: int, out: Path | None) -> None:
    cassette = Cassette([{"response": {"content": "x" * 200}, "repeat": True}])
    messages = [{"role": "user", "content": "benchmark prompt " * 20}]
    async with ReplayServer(cassette) as server:
        spec = ModelSpec("openai/bench", api_base=server.base_url)
        client = ModelClient(CallScheduler(max_in_flight=limit))
        ledger = UsageLedger()
        await client.complete(spec, messages)  # warm-up: litellm import and connection pool

        async with httpx.AsyncClient(base_url=server.base_url) as http:
            raw: list[float] = []
            body = {"model": "bench", "messages": messages}
            for _ in range(calls):
                t = time.perf_counter()
                (await http.post("/chat/completions", json=body)).raise_for_status()
                raw.append(time.perf_counter() - t)

        seq: list[float] = []
        for _ in range(calls):
            t = time.perf_counter()
            await client.complete(spec, messages, ledger=ledger)
            seq.append(time.perf_counter() - t)

        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrent):
                tg.start_soon(lambda: client.complete(spec, messages, role="sub", ledger=ledger))
        wall = time.perf_counter() - t

    def ms(values: list[float]) -> str:
        q = statistics.quantiles(values, n=20)
        return f"median {statistics.median(values) * 1e3:.2f} ms, p95 {q[18] * 1e3:.2f} ms"

    print(f"raw httpx        {calls} sequential calls: {ms(raw)}")
    print(f"ModelClient      {calls} sequential calls: {ms(seq)}")
    overhead = (statistics.median(seq) - statistics.median(raw)) * 1e3
    print(f"client overhead  {overhead:.2f} ms per call (median difference)")
    print(
        f"concurrent       {concurrent} calls, limit {limit}: {wall:.2f} s, "
        f"{concurrent / wall:.0f} calls/s"
    )
    print(f"ledger           {ledger.calls()} calls, {ledger.totals().total_tokens} tokens")
    report = {
        "raw_httpx_ms": summary(raw, 1000),
        "model_client_ms": summary(seq, 1000),
        "client_overhead_p50_ms": round(overhead, 3),
        "concurrent": {
            "calls": concurrent,
            "limit": limit,
            "wall_s": round(wall, 3),
            "calls_per_s": round(concurrent / wall, 1),
        },
    }
    print(f"wrote {write_results('models', report, out)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=300)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/models.json")
    args = parser.parse_args()
    anyio.run(bench, args.calls, args.concurrent, args.limit, args.json)


if __name__ == "__main__":
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and model servers
    main()
