"""Overhead of the root loop, measured against the replay server (no real model latency).

Prints, for one run each:
- sandbox start-up time (run_start -> sandbox_ready),
- per-turn overhead of the loop (model call through litellm + cell + bookkeeping),
- sub-call throughput of one ``llm_batch`` through the bridge (items per second),
- teardown time (last cell -> run_end).

Usage: .venv/bin/python benchmarks/bench_rlm_loop.py [--turns 20] [--batch 500]
Needs Docker and the sandbox image (``rlm sandbox build``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import write_results
from engine import Engine, EngineConfig, Limits
from engine.interrupts import stop_on_sigterm
from engine.models import Cassette, ModelSpec, ReplayServer


def _entries(turns: int, batch: int) -> list[dict[str, Any]]:
    step = "```repl\nx = len(context)\nprint(x)\n```"
    fan = f"```repl\nr = llm_batch([f'item {{i}}' for i in range({batch})])\nprint(len(r))\n```"
    done = "```repl\nanswer['content'] = str(len(r))\nanswer['ready'] = True\n```"
    root = [step] * (turns - 2) + [fan, done]
    return [{"match": {"model": "root"}, "response": {"content": c}} for c in root] + [
        {"match": {"model": "sub"}, "response": {"content": "ok"}, "repeat": True}
    ]


async def main(turns: int, batch: int, out: Path | None) -> None:
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with ReplayServer(Cassette(_entries(turns, batch))) as server:
            config = EngineConfig(
                model=ModelSpec("openai/root", api_base=server.base_url, api_key="x"),
                sub_model=ModelSpec("openai/sub", api_base=server.base_url, api_key="x"),
                limits=Limits(max_iterations=turns + 1),
                trajectory_path=Path(tmp) / "t.jsonl",
            )
            async with Engine(config) as engine:
                result = await engine.run("bench", "x" * 100_000, events.append)
    assert result.ready and result.answer == str(batch), result
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    start = by_type["sandbox_ready"][0]["t"] - by_type["run_start"][0]["t"]
    turn_times = [e["t"] for e in by_type["turn"]]
    cells = by_type["cell"]
    # Overhead per turn: the gap between consecutive turn events, skipping the first turn
    # (litellm's import and first connection) and the batch turn.
    gaps = [b - a for a, b in itertools.pairwise(turn_times[1:-1])]
    fan_cell = cells[-2]
    teardown = by_type["run_end"][0]["t"] - cells[-1]["t"]
    print(f"sandbox start-up:        {start:8.3f} s")
    print(f"first turn (cold):       {turn_times[0] - by_type['sandbox_ready'][0]['t']:8.3f} s")
    print(f"turn overhead median:    {statistics.median(gaps) * 1000:8.1f} ms  (n={len(gaps)})")
    print(f"turn overhead max:       {max(gaps) * 1000:8.1f} ms")
    print(
        f"llm_batch of {batch}:       {fan_cell['duration_s']:8.3f} s  "
        f"({batch / fan_cell['duration_s']:.0f} sub-calls/s)"
    )
    print(f"teardown:                {teardown:8.3f} s")
    print(f"total wall:              {result.wall_s:8.3f} s")
    report = {
        "turns": turns,
        "sandbox_startup_s": round(start, 3),
        "first_turn_s": round(turn_times[0] - by_type["sandbox_ready"][0]["t"], 3),
        "turn_overhead_ms": {
            "median": round(statistics.median(gaps) * 1000, 1),
            "max": round(max(gaps) * 1000, 1),
            "n": len(gaps),
        },
        "llm_batch": {
            "size": batch,
            "seconds": round(fan_cell["duration_s"], 3),
            "calls_per_s": round(batch / fan_cell["duration_s"], 1),
        },
        "teardown_s": round(teardown, 3),
        "total_wall_s": result.wall_s,
    }
    print(f"wrote {write_results('rlm_loop', report, out)}")


if __name__ == "__main__":
    stop_on_sigterm()  # a kill or timeout still closes sandboxes and model servers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/rlm_loop.json")
    args = parser.parse_args()
    anyio.run(main, args.turns, args.batch, args.json)
