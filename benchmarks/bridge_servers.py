"""Side by side: the bridge's own h11 server against uvicorn + starlette, both on a Unix socket.

Used by ``bench_bridge.py`` (``make bench-bridge``); runnable alone:

    .venv/bin/python benchmarks/bridge_servers.py [--small 3000] [--large 200] [--clients 1,8]

Both servers run in their own process and answer ``POST /v1/llm_query`` with the same dispatch
code (``BridgeServer._dispatch``: JSON parse, in a thread above 256 KiB, validation, handler,
reply) and a handler that answers at once, so only the HTTP layer differs. The starlette app
does what the bridge does around the dispatch: bearer check, body cap, and cancelling the call
when the client disconnects; uvicorn gets the bridge's connection cap (16) and keep-alive idle
timeout (300 s). uvicorn has no equivalent of the bridge's header and body timeouts or its
shared budget of buffered bytes, so the starlette side does a little less work per request.
Load comes from separate client processes, each with one keep-alive connection through the
real in-sandbox client (``bridge_client.llm_query``), started together after a warm-up.
Reported per server, body size and client count: requests/s, p50 and p99 latency, and the
server process's CPU time per request (the steadiest number on a busy machine). Also the time
to start and stop one server, since the engine runs one per task.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT_FILE = ROOT / "sandbox-image" / "rlm_runtime" / "bridge_client.py"
SMALL_PROMPT = "Summarise: " + "lorem ipsum " * 40
LARGE_PROMPT = "x" * (1 << 20)
ANSWER = "a short summary"


# --- servers (each runs in its own process) ----------------------------------------------------


class _Immediate:
    async def llm_query(self, prompt: str, model: str | None) -> str:
        return ANSWER

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        return ANSWER


def serve_h11(socket_path: str, token: str) -> None:
    """The bridge as the engine runs it (anyio on asyncio), until stdin closes."""
    import anyio

    from engine.bridge import BridgeServer

    async def main() -> None:
        async with BridgeServer(Path(socket_path), token, _Immediate()):
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(main)


def starlette_app(socket_path: str, token: str) -> Any:
    """An ASGI app equivalent to the bridge server, around the same dispatch code."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from engine.bridge import BridgeServer
    from engine.bridge.protocol import ROUTES, error_body

    dispatcher = BridgeServer(Path(socket_path).parent / "unused.sock", token, _Immediate())
    expected = b"Bearer " + token.encode()
    max_body = 16 << 20

    async def endpoint(request: Request) -> Response:
        auth = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(auth, expected):
            return JSONResponse(error_body("unauthorized", "missing or wrong bridge token"), 401)
        length = request.headers.get("content-length")
        if length is not None and int(length) > max_body:
            return JSONResponse(error_body("payload_too_large", "too large"), 413)
        body = await request.body()
        outcome: tuple[int, dict[str, Any]] | None = None
        async with anyio.create_task_group() as task_group:

            async def watch() -> None:
                if (await request.receive())["type"] == "http.disconnect":
                    task_group.cancel_scope.cancel()

            task_group.start_soon(watch)
            outcome = await dispatcher._dispatch(request.url.path, bytearray(body))
            task_group.cancel_scope.cancel()
        if outcome is None:
            return Response(status_code=499)
        status, payload = outcome
        return JSONResponse(payload, status)

    routes = [Route(path, endpoint, methods=["POST"]) for path in sorted(ROUTES)]
    return Starlette(routes=routes)


def serve_uvicorn(socket_path: str, token: str, http: str, loop: str) -> None:
    """uvicorn + starlette on a Unix socket, until stdin closes."""
    import asyncio
    import threading

    import uvicorn

    config = uvicorn.Config(
        starlette_app(socket_path, token),
        uds=socket_path,
        http=http,
        loop=loop,
        lifespan="off",
        log_level="warning",
        access_log=False,
        # The bridge's BridgeLimits defaults, where uvicorn has a matching setting.
        limit_concurrency=16,
        timeout_keep_alive=300,
    )
    server = uvicorn.Server(config)

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await task

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# --- load client (its own process, stands in for a kernel) -------------------------------------


def run_client(requests: int, large: bool, warmup: int) -> None:
    """Warm up, say ``ready``, wait for ``go`` on stdin, then time ``requests`` calls."""
    spec = importlib.util.spec_from_file_location("bridge_client", CLIENT_FILE)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    prompt = LARGE_PROMPT if large else SMALL_PROMPT
    for _ in range(warmup):
        assert client.llm_query(prompt) == ANSWER
    print("ready", flush=True)
    sys.stdin.readline()
    times = []
    start = time.monotonic()
    for _ in range(requests):
        began = time.perf_counter()
        client.llm_query(prompt)
        times.append(time.perf_counter() - began)
    end = time.monotonic()
    print(json.dumps({"start": start, "end": end, "times": times}), flush=True)


# --- orchestration -----------------------------------------------------------------------------


def servers() -> list[tuple[str, list[str]]]:
    """(label, server arguments) of every server this Python can run."""
    chosen = [
        ("bridge (h11, anyio)", ["h11"]),
        ("uvicorn h11 + starlette", ["uvicorn", "h11", "asyncio"]),
    ]
    if importlib.util.find_spec("httptools") and importlib.util.find_spec("uvloop"):
        chosen.append(("uvicorn httptools+uvloop + starlette", ["uvicorn", "httptools", "uvloop"]))
    return chosen


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms_at(times: list[float], pct: int) -> float:
    """The ``pct``-th percentile of ``times`` (seconds) in ms, interpolated."""
    return statistics.quantiles(times, n=100, method="inclusive")[pct - 1] * 1000


def measure(
    server_args: list[str], *, clients: int, requests: int, large: bool, env: dict[str, str]
) -> dict[str, float]:
    """Start one server, drive it with ``clients`` processes, return the numbers."""
    me = str(Path(__file__).resolve())
    socket_path, token = env["RLM_BRIDGE_SOCKET"], env["RLM_BRIDGE_TOKEN"]
    server = subprocess.Popen(
        [sys.executable, me, "--serve", socket_path, token, *server_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdin is not None and server.stdout is not None
    procs: list[subprocess.Popen[str]] = []
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {server_args[0]} server did not start")
        per_client = max(1, requests // clients)
        warmup = 3 if large else 50
        for _ in range(clients):
            procs.append(
                subprocess.Popen(
                    [sys.executable, me, "--client", str(per_client), str(int(large)), str(warmup)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a bench client failed during its warm-up")
        cpu_before = _cpu_seconds(server.pid)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError("a bench client failed")
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu = _cpu_seconds(server.pid) - cpu_before
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    times = [t for result in results for t in result["times"]]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "requests": len(times),
        "requests_per_s": round(len(times) / wall, 1),
        "p50_ms": round(_ms_at(times, 50), 3),
        "p99_ms": round(_ms_at(times, 99), 3),
        "server_cpu_us_per_request": round(cpu / len(times) * 1e6, 1),
    }


def compare(small: int, large: int, client_counts: list[int]) -> list[dict[str, Any]]:
    """Run every server x body size x client count; return one row per combination."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-servers-") as tmp:
        run = Path(tmp)
        (run / "children").mkdir()
        env = {
            **os.environ,
            "RLM_BRIDGE_SOCKET": str(run / "bridge.sock"),
            "RLM_BRIDGE_TOKEN": secrets.token_urlsafe(24),
            "RLM_RUN_DIR": str(run),
            "RLM_LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        for body, is_large, requests in (("small", False, small), ("1 MiB", True, large)):
            for clients in client_counts:
                for label, args in servers():
                    numbers = measure(
                        args, clients=clients, requests=requests, large=is_large, env=env
                    )
                    rows.append({"server": label, "body": body, "clients": clients, **numbers})
    return rows


def lifecycle_ms(cycles: int = 20) -> dict[str, dict[str, float]]:
    """Median ms to start serving and to stop, per server: the engine runs one per task."""
    import asyncio
    import contextlib

    import uvicorn

    from engine.bridge import BridgeServer

    class EmbeddedServer(uvicorn.Server):
        # Embedded in the engine: the engine owns the process's signals, not the bridge.
        def capture_signals(self) -> Any:
            return contextlib.nullcontext()

    async def h11_cycle(run: Path) -> tuple[float, float]:
        began = time.perf_counter()
        server = BridgeServer(run / "b.sock", "token", _Immediate())
        await server.__aenter__()
        started = time.perf_counter()
        await server.__aexit__(None, None, None)
        return started - began, time.perf_counter() - started

    async def uvicorn_cycle(run: Path) -> tuple[float, float]:
        began = time.perf_counter()
        app = starlette_app(str(run / "u.sock"), "token")
        config = uvicorn.Config(app, uds=str(run / "u.sock"), lifespan="off", log_level="warning")
        server = EmbeddedServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        server.should_exit = True
        await task
        return started - began, time.perf_counter() - started

    async def main(run: Path) -> dict[str, dict[str, float]]:
        result = {}
        for name, cycle in (("bridge (h11, anyio)", h11_cycle), ("uvicorn", uvicorn_cycle)):
            times = [await cycle(run) for _ in range(cycles)]
            result[name] = {
                "start_ms": round(statistics.median(t[0] for t in times) * 1000, 2),
                "stop_ms": round(statistics.median(t[1] for t in times) * 1000, 2),
            }
        return result

    with tempfile.TemporaryDirectory(prefix="rlm-bench-cycle-") as tmp:
        return asyncio.run(main(Path(tmp)))


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as an aligned text table."""
    print(
        f"{'server':<38} {'body':>6} {'clients':>7} {'req/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'server CPU us/req':>18}"
    )
    for row in rows:
        print(
            f"{row['server']:<38} {row['body']:>6} {row['clients']:>7} "
            f"{row['requests_per_s']:>9.1f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
            f"{row['server_cpu_us_per_request']:>18.1f}"
        )


def print_lifecycle(numbers: dict[str, dict[str, float]]) -> None:
    """Start and stop times, one line per server."""
    print("start / stop of one server, median ms (one per task in the engine)")
    for name, row in numbers.items():
        print(f"   {name:<36} start {row['start_ms']:7.2f}  stop {row['stop_ms']:7.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        socket_path, token, kind, *rest = sys.argv[2:]
        if kind == "h11":
            serve_h11(socket_path, token)
        else:
            serve_uvicorn(socket_path, token, *rest)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        run_client(int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=3000, help="small requests per scenario")
    parser.add_argument("--large", type=int, default=200, help="1 MiB requests per scenario")
    parser.add_argument("--clients", default="1,8", help="concurrent client processes")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    print_table(compare(args.small, args.large, counts))
    print_lifecycle(lifecycle_ms())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
