"""The resumable bookkeeping of ``benchmarks/bench_anymodel.py`` (its model runs are the bench)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import ModuleType

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
    second = bench.Outcome("sniah", 8000, "served", "rlm", 1, 0.0, 900.0, 4, "small", "")
    results.write_text(
        json.dumps(dataclasses.asdict(first)) + "\n" + json.dumps(dataclasses.asdict(second))[:30]
    )
    done = bench.load_outcomes(results)
    assert list(done) == [("sniah", 8000, "served", "rlm", 0)]  # the torn line runs again
    with bench.open_results(results) as sink:
        sink.write(json.dumps(dataclasses.asdict(second)) + "\n")
    done = bench.load_outcomes(results)
    assert len(done) == 2
    wanted = [("sniah", 8000, "served", "rlm", i) for i in range(3)]
    wanted.append(("oolong", 8000, "served", "base", 0))
    text = bench.report(list(done.values()), wanted)
    assert "sniah      8K   served    rlm          1/2    750.0   3.5  (1 of 3 not run)" in text
    assert "oolong   8Ktok   served   base      not run" in text
