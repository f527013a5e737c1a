"""The resumable bookkeeping of ``benchmarks/bench_local.py`` (its model runs are the benchmark)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.module_support import load_module

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_local.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_module("bench_local", BENCH)


def _outcome(bench: ModuleType, length: int, method: str, seed: int, correct: bool, wall: float):
    return bench.Outcome(length, method, seed, correct, wall, 2, "")


def test_load_outcomes_resumes_and_skips_a_torn_line(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    first = _outcome(bench, 8000, "rlm", 1000, True, 10.0)
    again = _outcome(bench, 8000, "rlm", 1000, False, 12.0)  # a re-measured task wins
    other = _outcome(bench, 32000, "base", 1001, True, 200.0)
    lines = [json.dumps(dataclasses.asdict(o)) for o in (first, other, again)]
    path.write_text("\n".join(lines) + '\n{"length": 8000, "meth')
    done = bench.load_outcomes(path)
    assert set(done) == {(8000, "rlm", 1000), (32000, "base", 1001)}
    assert done[(8000, "rlm", 1000)] == again
    assert bench.load_outcomes(tmp_path / "missing.jsonl") == {}
    # Appending after the torn line keeps the new outcome on a line of its own.
    late = _outcome(bench, 128000, "rlm", 1002, True, 30.0)
    with bench.open_results(path) as sink:
        sink.write(json.dumps(dataclasses.asdict(late)) + "\n")
    assert bench.load_outcomes(path)[(128000, "rlm", 1002)] == late


def test_report_counts_medians_and_pending_tasks(bench: ModuleType) -> None:
    outcomes = [
        _outcome(bench, 32000, "rlm", 1000, True, 20.0),
        _outcome(bench, 32000, "rlm", 1001, True, 30.0),
        _outcome(bench, 32000, "rlm", 1002, False, 90.0),
        _outcome(bench, 32000, "base", 1000, False, 200.0),
    ]
    text = bench.report(outcomes, 3, [32000, 128000], ["rlm", "base"])
    rows = text.splitlines()[1:]
    assert rows[0].split()[:4] == ["32K", "rlm", "2/3", "30.0"]
    assert "(2 of 3 not run yet)" in rows[1] and rows[1].split()[:3] == ["32K", "base", "0/1"]
    assert rows[2].split() == ["128K", "rlm", "not", "run"]
    assert rows[3].split() == ["128K", "base", "not", "run"]
