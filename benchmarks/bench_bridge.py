"""Benchmark the bridge: latency of one ``llm_query`` and throughput of ``llm_batch``.

    .venv/bin/python benchmarks/bench_bridge.py [--calls 2000] [--batch 200] [--concurrency 32]

Set-up, as in production: the bridge server runs in this process (anyio); the in-sandbox
client (``sandbox-image/rlm_runtime/bridge_client.py``) runs in a separate Python process,
like the kernel; a stand-in model provider (an OpenAI-style ``/v1/chat/completions`` on
uvicorn) runs in a third process. Scenarios:

1. ``llm_query`` through the bridge to a handler that answers at once: the bridge's own cost.
2. A direct HTTP call from the client process to the provider (keep-alive ``http.client``):
   what a sandbox with network access would pay. 2b. The forwarding handler's provider call
   (httpx) made by the orchestrator directly: what the bridge's handler costs by itself.
3. ``llm_query`` through the bridge to a handler that forwards to the provider with httpx.
   Hop overhead = p50(3) - p50(2b) (the target is <= 3 ms); p50(3) - p50(2) also counts
   httpx being slower than http.client.
4. ``llm_batch`` of ``--batch`` prompts: (a) to the immediate handler; (b) the same provider
   calls made by the orchestrator directly (``--concurrency`` at once, ``--delay-ms`` each);
   (c) through the bridge to the forwarding handler. Overhead = (c) - (b); the ideal is
   ``ceil(n / c) * delay``.
5. Side by side, the bridge's h11 server against uvicorn + starlette over a Unix socket, same
   dispatch code: requests/s, p50/p99 and server CPU per request for small and 1 MiB bodies
   with 1 and 8 concurrent clients (``bridge_servers.py``; also uvicorn with httptools+uvloop
   when those are importable).

Every number is also written to ``--json`` (default ``out/bench/bridge.json``).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT_FILE = ROOT / "sandbox-image" / "rlm_runtime" / "bridge_client.py"
PROMPT = "Summarise: " + "lorem ipsum " * 40
WARMUP = 200


# --- stand-in model provider (runs in its own process) -----------------------------------------


def serve_provider(port: int) -> None:
    """An OpenAI-style chat completions endpoint; ``?delay_ms=`` adds latency per call."""
    import asyncio
    from urllib.parse import parse_qs

    import uvicorn

    reply = {
        "id": "bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a short summary"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104},
    }
    body = json.dumps(reply).encode()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        delay = float(parse_qs(scope["query_string"].decode()).get("delay_ms", ["0"])[0])
        if delay:
            await asyncio.sleep(delay / 1000)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- client process (stands in for the kernel) -------------------------------------------------


def client_bridge(calls: int) -> list[float]:
    spec = importlib.util.spec_from_file_location("bridge_client", CLIENT_FILE)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    for _ in range(WARMUP):
        client.llm_query(PROMPT)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.llm_query(PROMPT)
        times.append(time.perf_counter() - start)
    return times


def client_direct(port: int, calls: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT}]})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer key"}

    def one() -> None:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        reply = json.loads(conn.getresponse().read())
        assert reply["choices"][0]["message"]["content"]

    for _ in range(WARMUP):
        one()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    return times


def client_batch(size: int) -> float:
    spec = importlib.util.spec_from_file_location("bridge_client", CLIENT_FILE)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    client.llm_batch(["warm up"] * 4)
    start = time.perf_counter()
    answers = client.llm_batch([f"{PROMPT} #{i}" for i in range(size)])
    elapsed = time.perf_counter() - start
    assert len(answers) == size and not any(a.startswith("[ERROR]") for a in answers)
    return elapsed


def run_client(args: list[str], env: dict[str, str]) -> object:
    out = subprocess.run(
        [sys.executable, __file__, "--client", *args],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


# --- orchestrator side -------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, object]:
    import anyio
    import httpx

    from engine.bridge import BridgeServer

    class Immediate:
        async def llm_query(self, prompt: str, model: str | None) -> str:
            return "a short summary"

        async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
            return "child"

    class Forward:
        def __init__(self, http: httpx.AsyncClient, delay_ms: float, limit: int) -> None:
            self.http, self.delay_ms = http, delay_ms
            self.limiter = anyio.CapacityLimiter(limit)

        async def llm_query(self, prompt: str, model: str | None) -> str:
            body = {"model": model or "bench", "messages": [{"role": "user", "content": prompt}]}
            async with self.limiter:
                response = await self.http.post(
                    f"/v1/chat/completions?delay_ms={self.delay_ms}", json=body
                )
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
            return "child"

    port = _free_port()
    provider = subprocess.Popen([sys.executable, __file__, "--provider", str(port)])
    try:
        await _wait_for_port(port)
        limits = httpx.Limits(max_connections=max(64, args.concurrency))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as http:
            with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
                run = Path(tmp)
                token = secrets.token_urlsafe(24)
                env = {
                    "RLM_BRIDGE_SOCKET": str(run / "bridge.sock"),
                    "RLM_BRIDGE_TOKEN": token,
                    "RLM_RUN_DIR": str(run),
                }
                calls = str(args.calls)

                async def through(handler: object, client_args: list[str]) -> object:
                    async with BridgeServer(run / "bridge.sock", token, handler):
                        return await anyio.to_thread.run_sync(run_client, client_args, env)

                bridge_only = await through(Immediate(), ["bridge", calls])
                direct = await anyio.to_thread.run_sync(
                    run_client, ["direct", str(port), calls], env
                )
                forward = Forward(http, 0, args.concurrency)
                direct_httpx = await _direct_sequential(forward, args.calls)
                via_bridge = await through(forward, ["bridge", calls])
                batch = str(args.batch)
                batch_only = await through(Immediate(), ["batch", batch])
                batch_handler = Forward(http, args.delay_ms, args.concurrency)
                batch_direct = await _direct_batch(batch_handler, args.batch)
                batch_bridge = await through(batch_handler, ["batch", batch])
    finally:
        provider.terminate()
        provider.wait(timeout=10)

    print(f"llm_query latency over {args.calls} sequential calls (ms)")
    _row("1. bridge, immediate handler", bridge_only)
    _row("2. direct HTTP to provider", direct)
    _row("2b. orchestrator httpx -> provider", direct_httpx)
    _row("3. bridge -> httpx -> provider", via_bridge)
    hop = _pct(via_bridge, 50) - _pct(direct_httpx, 50)
    overall = _pct(via_bridge, 50) - _pct(direct, 50)
    print(f"   bridge hop overhead p50 (3 - 2b) = {hop:.3f} ms (target <= 3 ms)")
    print(f"   vs a direct call from the sandbox p50 (3 - 2) = {overall:.3f} ms")
    ideal = math.ceil(args.batch / args.concurrency) * args.delay_ms
    print(
        f"llm_batch of {args.batch} prompts, concurrency {args.concurrency}, "
        f"provider {args.delay_ms:g} ms/call (ideal {ideal:.0f} ms), wall time (ms)"
    )
    print(f"   4a. bridge, immediate handler       {_ms(batch_only):9.1f}")
    print(f"   4b. orchestrator -> provider direct {_ms(batch_direct):9.1f}")
    print(f"   4c. bridge -> httpx -> provider     {_ms(batch_bridge):9.1f}")
    print(f"   bridge overhead = {_ms(batch_bridge) - _ms(batch_direct):.1f} ms for the batch")
    return {
        "llm_query_ms": {
            name: _summary(times)
            for name, times in (
                ("bridge_immediate", bridge_only),
                ("direct_http", direct),
                ("orchestrator_httpx", direct_httpx),
                ("bridge_forward", via_bridge),
            )
        },
        "hop_overhead_p50_ms": round(hop, 3),
        "llm_batch": {
            "size": args.batch,
            "concurrency": args.concurrency,
            "delay_ms": args.delay_ms,
            "ideal_ms": ideal,
            "bridge_immediate_ms": round(_ms(batch_only), 1),
            "direct_ms": round(_ms(batch_direct), 1),
            "bridge_forward_ms": round(_ms(batch_bridge), 1),
        },
    }


def _summary(times: object) -> dict[str, float]:
    assert isinstance(times, list)
    return {
        "p50": round(_pct(times, 50), 3),
        "p99": round(_pct(times, 99), 3),
        "mean": round(statistics.fmean(times) * 1000, 3),
    }


async def _direct_sequential(handler: object, calls: int) -> list[float]:
    """What the forwarding handler costs on its own: the same calls, without the bridge."""
    for _ in range(WARMUP):
        await handler.llm_query(PROMPT, None)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await handler.llm_query(PROMPT, None)
        times.append(time.perf_counter() - start)
    return times


async def _direct_batch(handler: object, size: int) -> float:
    """The same provider calls made by the orchestrator itself, without bridge or client."""
    import anyio

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(size):
            tg.start_soon(handler.llm_query, f"{PROMPT} #{i}", None)
    return time.perf_counter() - start


def _ms(seconds: object) -> float:
    assert isinstance(seconds, float)
    return seconds * 1000


def _row(name: str, times: object) -> None:
    assert isinstance(times, list)
    print(
        f"   {name:<36} p50 {_pct(times, 50):7.3f}  p99 {_pct(times, 99):7.3f}  "
        f"mean {statistics.fmean(times) * 1000:7.3f}"
    )


def _pct(times: object, pct: int) -> float:
    assert isinstance(times, list)
    ordered = sorted(times)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index] * 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int) -> None:
    import anyio

    with anyio.fail_after(30):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
            else:
                await stream.aclose()
                return


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--provider":
        serve_provider(int(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        mode, *rest = sys.argv[2:]
        if mode == "bridge":
            result: object = client_bridge(int(rest[0]))
        elif mode == "direct":
            result = client_direct(int(rest[0]), int(rest[1]))
        else:
            result = client_batch(int(rest[0]))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential llm_query calls")
    parser.add_argument("--batch", type=int, default=200, help="prompts in the llm_batch")
    parser.add_argument("--concurrency", type=int, default=32, help="provider calls at once")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="provider latency (batch)")
    parser.add_argument("--small", type=int, default=3000, help="5: small requests per scenario")
    parser.add_argument("--large", type=int, default=200, help="5: 1 MiB requests per scenario")
    parser.add_argument("--clients", default="1,8", help="5: concurrent client processes")
    parser.add_argument(
        "--servers-only", action="store_true", help="only the side-by-side comparison (5)"
    )
    parser.add_argument(
        "--json", type=Path, default=Path("out/bench/bridge.json"), help="where to write numbers"
    )
    args = parser.parse_args()
    os.environ.setdefault("RLM_LOG_LEVEL", "warning")
    sys.path.insert(0, str(ROOT))
    import anyio

    from benchmarks import bridge_servers
    from benchmarks.results import write_results

    report: dict[str, object] = {} if args.servers_only else anyio.run(bench, args)
    print(
        f"bridge server vs uvicorn + starlette, Unix socket, immediate handler "
        f"({args.small} small / {args.large} x 1 MiB requests per row)"
    )
    rows = bridge_servers.compare(args.small, args.large, [int(n) for n in args.clients.split(",")])
    bridge_servers.print_table(rows)
    report["servers"] = rows
    report["server_lifecycle_ms"] = bridge_servers.lifecycle_ms()
    bridge_servers.print_lifecycle(report["server_lifecycle_ms"])
    report["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(f"wrote {write_results('bridge', report, args.json)}")


if __name__ == "__main__":
    main()
