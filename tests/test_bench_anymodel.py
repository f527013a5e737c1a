"""The resumable bookkeeping of ``benchmarks/bench_anymodel.py`` (its model runs are the bench)."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from tests.module_support import load_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # as when the script runs: its sibling is importable
    try:
        module = load_module("bench_anymodel", BENCHMARKS / "bench_anymodel.py")
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_bench_anymodel_resumes_and_reports(bench: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "outcomes.jsonl"
    first = bench.Outcome("sniah", 8000, "served", "rlm", 0, 1.0, 600.0, 3, "small", "")
    second = bench.Outcome(
        "sniah", 8000, "served", "rlm", 1, 0.0, 900.0, 4, "small", "", "abc", "The number is 7."
    )
    older = dataclasses.asdict(first)
    del older["answer"]  # lines written before answers were kept still load
    results.write_text(json.dumps(older) + "\n" + json.dumps(dataclasses.asdict(second))[:30])
    done = bench.load_outcomes(results)
    assert list(done) == [("sniah", 8000, "served", "rlm", 0)]  # the torn line runs again
    with bench.open_results(results) as sink:
        sink.write(json.dumps(dataclasses.asdict(second)) + "\n")
    done = bench.load_outcomes(results)
    assert len(done) == 2
    assert done[("sniah", 8000, "served", "rlm", 1)].answer == "The number is 7."
    wanted = [("sniah", 8000, "served", "rlm", i) for i in range(3)]
    wanted.append(("oolong", 8000, "served", "base", 0))
    text = bench.report(list(done.values()), wanted)
    assert "sniah      8K   served    rlm          1/2    750.0   3.5  (1 of 3 not run)" in text
    assert "oolong   8Ktok   served   base      not run" in text


def test_bench_anymodel_refuses_a_port_another_server_holds(bench: ModuleType) -> None:
    # Seen: a server left by a killed run answered the health check for the new one, then went
    # away, and every task of the new run failed with a connection error.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = bench.parse_args(["--port", str(taken.getsockname()[1])])

        async def start() -> None:
            async with bench.served_model(args):
                raise AssertionError("a server must not start on a port in use")

        with pytest.raises(SystemExit, match="is in use"):
            anyio.run(start)
