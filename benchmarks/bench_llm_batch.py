"""``llm_batch`` throughput through a real sandbox and bridge, against direct calls to the server.

    make bench-llm-batch
    python benchmarks/bench_llm_batch.py --scenarios 4x250,16x50,64x0 --batch 200
    python benchmarks/bench_llm_batch.py --api-base http://127.0.0.1:8765/v1 --model openai/local

The model server is, by default, a stand-in started here in its own process: an
OpenAI-compatible ``/v1/chat/completions`` with ``S`` slots that each answer one call after a
fixed ``L`` ms (more calls wait for a slot, as llama.cpp queues them); a scenario ``SxL`` names
one. ``--api-base`` targets a real server instead (e.g. the local llama.cpp server; its slots
are whatever it was started with), with ``--model`` and ``--max-tokens`` for its calls.

For each scenario the same ``--batch`` prompts are sent three ways, at most ``--max-in-flight``
at once (the engine's own default, ``EngineConfig.max_in_flight``):

1. ``httpx``: raw HTTP from this process (keep-alive pool), no engine;
2. ``client``: the engine's model client (litellm under the call scheduler), as the bridge's
   handler makes them, without sandbox or bridge;
3. ``llm_batch``: one ``llm_batch(prompts)`` in a real sandbox's kernel (an engine run whose
   root model is replayed), through the bridge, timed inside the kernel.

Calls/s of each, the ideal ``min(S, in-flight) / L`` for a stand-in, and the bridge's cost
(3 against 2, per call and as a share of the throughput): the bridge must not be the
bottleneck. Prints a table, writes ``out/bench/llm_batch.json``; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import ratio, write_results  # noqa: E402

PROMPT = "Answer in one word: what colour is the sky on a clear day? (item {i})"


# --- the stand-in server (its own process) -----------------------------------------------------


def serve_slots(port: int, slots: int, latency_ms: float) -> None:
    """An OpenAI-style chat endpoint with ``slots`` parallel slots of ``latency_ms`` each."""
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    gate = asyncio.Semaphore(slots)
    counter = 0

    async def chat(request: Request) -> JSONResponse:
        nonlocal counter
        body = await request.json()
        async with gate:
            await asyncio.sleep(latency_ms / 1000)
        counter += 1
        return JSONResponse(
            {
                "id": f"chatcmpl-slots-{counter}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "slots"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "blue"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
            }
        )

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "slots", "object": "model"}]})

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
    uvicorn.run(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for(url: str) -> None:
    import httpx

    with anyio.fail_after(30):
        while True:
            try:
                async with httpx.AsyncClient() as http:
                    (await http.get(f"{url}/models")).raise_for_status()
                return
            except httpx.HTTPError:
                await anyio.sleep(0.1)


# --- the three ways ----------------------------------------------------------------------------


async def via_httpx(api_base: str, model: str, n: int, in_flight: int, max_tokens: int) -> float:
    import httpx

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    limiter = anyio.CapacityLimiter(in_flight)
    name = model.split("/", 1)[-1]

    async with httpx.AsyncClient(base_url=api_base, limits=limits, timeout=600) as http:

        async def one(i: int) -> None:
            body = {
                "model": name,
                "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
                "max_tokens": max_tokens,
            }
            async with limiter:
                (await http.post("/chat/completions", json=body)).raise_for_status()

        await one(-1)  # connection set-up is not what this measures
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for i in range(n):
                group.start_soon(one, i)
        return time.perf_counter() - started


async def via_client(api_base: str, model: str, n: int, in_flight: int, max_tokens: int) -> float:
    from engine.models import CallScheduler, ModelClient, ModelSpec

    spec = ModelSpec(model, api_base=api_base, api_key="x", max_tokens=max_tokens)
    client = ModelClient(CallScheduler(max_in_flight=in_flight))

    async def one(i: int) -> None:
        await client.complete(spec, [{"role": "user", "content": PROMPT.format(i=i)}], role="sub")

    await one(-1)  # litellm's import and first connection
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(one, i)
    return time.perf_counter() - started


BATCH_CELL = """
import json, time
prompts = [{prompt!r}.format(i=i) for i in range({n})]
llm_query({prompt!r}.format(i=-1))
t = time.perf_counter()
out = llm_batch(prompts)
took = time.perf_counter() - t
errors = [o for o in out if o.startswith('[ERROR]')]
answer['content'] = json.dumps({{"seconds": took, "answers": len(out), "errors": errors[:3]}})
answer['ready'] = True
"""


async def via_sandbox(
    api_base: str, model: str, n: int, in_flight: int, max_tokens: int
) -> tuple[float, float]:
    """``llm_batch`` timed in the kernel; also the sandbox's start-up (for the record)."""
    from engine import Engine, EngineConfig, Limits
    from engine.models import Cassette, ModelSpec, ReplayServer

    cell = BATCH_CELL.format(prompt=PROMPT, n=n)
    entries = [{"match": {"model": "root"}, "response": {"content": f"```repl{cell}```"}}]
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        async with ReplayServer(Cassette(entries)) as replay:
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=replay.base_url, api_key="x"),
                sub_model=ModelSpec(model, api_base=api_base, api_key="x", max_tokens=max_tokens),
                limits=Limits(max_iterations=1, cell_timeout_s=3600),
                trajectory_path=Path(tmp) / "t.jsonl",
                max_in_flight=in_flight,
                cache="off",
            )
            async with Engine(config) as engine:
                result = await engine.run("bench llm_batch", None, events.append)
    if not result.ready:
        raise RuntimeError(f"the llm_batch cell failed: {result.stop_reason} {result.error}")
    reply = json.loads(result.answer)
    if reply["errors"] or reply["answers"] != n:
        raise RuntimeError(f"llm_batch answered with errors: {reply}")
    startup = next(e["startup_s"] for e in events if e["type"] == "sandbox_ready")
    return float(reply["seconds"]), float(startup)


# --- scenarios ---------------------------------------------------------------------------------


def parse_scenario(text: str) -> tuple[int, float]:
    """``"4x250"`` -> (4 slots, 250 ms per call)."""
    try:
        slots, latency = text.lower().split("x")
        parsed = int(slots), float(latency)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"scenario {text!r} is not SLOTSxMILLISECONDS, e.g. 4x250"
        ) from None
    if parsed[0] < 1 or parsed[1] < 0:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: slots >= 1, latency >= 0")
    return parsed


def scenario_row(
    label: str, n: int, seconds: dict[str, float], ideal: float | None, in_flight: int
) -> dict[str, Any]:
    """Calls/s of each way, against the ideal, and the bridge's cost against the client."""
    rates = {way: round(n / s, 1) for way, s in seconds.items()}
    extra = seconds["llm_batch"] - seconds["client"]
    return {
        "scenario": label,
        "calls": n,
        "max_in_flight": in_flight,
        "seconds": {way: round(s, 3) for way, s in seconds.items()},
        "calls_per_s": rates,
        "ideal_calls_per_s": None if ideal is None else round(ideal, 1),
        "llm_batch_share_of_client": ratio(rates["llm_batch"], rates["client"], 3),
        "llm_batch_share_of_ideal": ratio(rates["llm_batch"], ideal, 3),
        "bridge_ms_per_call": round(extra / n * 1000, 3),
    }


async def run_scenario(
    args: argparse.Namespace, label: str, api_base: str, ideal: float | None
) -> dict[str, Any]:
    n, m, k = args.batch, args.max_in_flight, args.max_tokens
    seconds = {
        "httpx": await via_httpx(api_base, args.model, n, m, k),
        "client": await via_client(api_base, args.model, n, m, k),
    }
    seconds["llm_batch"], startup = await via_sandbox(api_base, args.model, n, m, k)
    row = scenario_row(label, n, seconds, ideal, m)
    row["sandbox_startup_s"] = round(startup, 3)
    return row


async def main(args: argparse.Namespace) -> None:
    rows = []
    if args.api_base:
        rows.append(await run_scenario(args, f"server {args.api_base}", args.api_base, None))
    for slots, latency in args.scenarios if not args.api_base else []:
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(slots), str(latency)]
        )
        try:
            base = f"http://127.0.0.1:{port}/v1"
            await _wait_for(base)
            ideal = min(slots, args.max_in_flight) / (latency / 1000) if latency else None
            label = f"{slots} slots x {latency:g} ms"
            rows.append(await run_scenario(args, label, base, ideal))
        finally:
            server.terminate()
            server.wait(timeout=10)
        print(f"{label}: measured", flush=True)
    print(
        f"llm_batch of {args.batch} prompts, at most {args.max_in_flight} in flight; calls/s "
        "(share of the engine client's rate)"
    )
    print(f"{'server':24} {'ideal':>7} {'httpx':>7} {'client':>7} {'llm_batch':>10} {'share':>6}")
    for row in rows:
        rate = row["calls_per_s"]
        print(
            f"{row['scenario']:24} {row['ideal_calls_per_s'] or '-':>7} {rate['httpx']:>7} "
            f"{rate['client']:>7} {rate['llm_batch']:>10} {row['llm_batch_share_of_client']:>6}"
        )
    print(f"wrote {write_results('llm_batch', {'scenarios': rows}, args.json)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        type=lambda t: [parse_scenario(x) for x in t.split(",") if x.strip()],
        default=[(4, 250.0), (16, 50.0), (64, 0.0)],
        help="stand-in servers SLOTSxMS, comma-separated (default 4x250,16x50,64x0)",
    )
    parser.add_argument("--batch", type=int, default=200, help="prompts per llm_batch")
    parser.add_argument("--max-in-flight", type=int, default=16, help="engine's max_in_flight")
    parser.add_argument("--api-base", default=None, help="a real OpenAI-compatible server")
    parser.add_argument("--model", default="openai/slots", help="litellm model name to call")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each call")
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/llm_batch.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve_slots(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        anyio.run(main, parse_args())
