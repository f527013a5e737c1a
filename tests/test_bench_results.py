"""The pure logic the benchmarks share: statistics, the results file, the side-by-side report.

The benchmarks' measurements themselves are not tests; what they compute from them is.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.results import percentile, ratio, summary, write_results  # noqa: E402
from tests.module_support import load_module  # noqa: E402


def _load(name: str) -> ModuleType:
    return load_module(name, ROOT / "benchmarks" / f"{name}.py")


def test_percentile_is_nearest_rank_and_always_a_measured_value() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 95) == 5.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7.0], 50) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], 101)


def test_summary_scales_rounds_and_handles_no_values() -> None:
    got = summary([0.001, 0.002, 0.003, 0.010], scale=1000, digits=2)
    assert got == {
        "n": 4,
        "p50": 2.0,
        "p95": 10.0,
        "p99": 10.0,
        "min": 1.0,
        "max": 10.0,
        "mean": 4.0,
    }
    assert summary([]) == {"n": 0}


def test_ratio_is_none_when_a_side_is_missing_or_zero() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_write_results_adds_meta_replaces_atomically_and_nulls_nan(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "x.json"
    written = write_results("x", {"a": 1.5, "bad": math.nan, "nested": {"p": Path("/p")}}, target)
    assert written == target
    data = json.loads(target.read_text())
    assert data["a"] == 1.5 and data["bad"] is None and data["nested"] == {"p": "/p"}
    assert data["meta"]["benchmark"] == "x" and data["meta"]["cpus"] >= 1
    assert data["meta"]["measured_at"].endswith("Z")
    assert len(data["meta"]["load_avg_1_5_15"]) == 3
    write_results("x", {"a": 2}, target, argv=["--n", "3"])
    again = json.loads(target.read_text())
    assert again["a"] == 2 and "bad" not in again and again["meta"]["argv"] == ["--n", "3"]
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no partial file left
    with pytest.raises(ValueError, match="reserved"):
        write_results("x", {"meta": 1}, target)


def _ours(cell_p50_ms: float) -> dict[str, object]:
    cell = summary([cell_p50_ms / 1000] * 3, 1000)
    return {
        "runtime": "runsc",
        "cold_start_s": summary([1.0, 1.2, 0.9]),
        "warm_start_s": summary([0.04, 0.05, 0.03]),
        "cell_ms": cell,
        "context": {
            "1": {"cell_ms": cell},
            "100": {"cell_ms": cell},
            "1024": {"cell_ms": {"n": 0}},
        },
    }


def test_sandbox_report_has_the_headline_keys_and_checks_the_targets() -> None:
    bench = _load("bench_sandbox")
    theirs = {
        "start_s": [3.0, 2.0, 4.0],
        "cleanup_s": [0.5],
        "by_context_mb": {
            "0": {"usable_s": 3.0, "cell_s": [0.8, 0.9, 1.0]},
            "1": {"usable_s": 3.5, "cell_s": [0.9]},
            "100": {"usable_s": 9.0, "cell_s": [4.0, 5.0, 6.0]},
        },
        "image": "rlm-bench-peer:x",
        "version": "0.1.3",
    }
    report = bench.build_report(_ours(4.0), theirs)
    assert report["cold_start_p50_s"] == 1.0
    assert report["warm_start_p50_s"] == 0.04
    assert report["warm_over_cold"] == 0.04
    assert report["cell_p50_ms"] == 4.0
    assert report["peer_start_p50_s"] == 3.0
    assert report["peer_cell_p50_ms"] == 900.0
    assert report["peer_cell_p50_ms_by_context_mb"] == {"0": 900.0, "1": 900.0, "100": 5000.0}
    assert report["cell_speedup_by_context_mb"] == {"0": 225.0, "1": 225.0, "100": 1250.0}
    assert report["start_speedup"] == 3.0
    assert report["targets"] == {
        "warm_start_at_most_tenth_of_cold": True,
        "warm_start_under_50ms": True,
        "cell_20x_peer_no_context": True,
        "cell_1000x_peer_100mb": True,
    }
    slow = bench.build_report(_ours(10.0), theirs)
    assert slow["targets"]["cell_1000x_peer_100mb"] is False


def test_sandbox_report_without_peer_or_pool_says_unknown_not_met() -> None:
    bench = _load("bench_sandbox")
    ours = _ours(4.0)
    ours["warm_start_s"] = None
    report = bench.build_report(ours, None)
    assert report["warm_start_p50_s"] is None and report["peer_cell_p50_ms"] is None
    assert set(report["targets"].values()) == {None}
    json.dumps(report, allow_nan=False)


def test_llm_batch_scenarios_parse_and_rows_compare_the_ways() -> None:
    bench = _load("bench_llm_batch")
    assert bench.parse_scenario("4x250") == (4, 250.0)
    assert bench.parse_scenario("64X0") == (64, 0.0)
    for bad in ("4", "x250", "0x10", "4x-1", "ax1"):
        with pytest.raises(Exception, match="scenario"):
            bench.parse_scenario(bad)
    row = bench.scenario_row(
        "4 slots x 100 ms", 200, {"httpx": 5.0, "client": 5.0, "llm_batch": 5.5}, 40.0, 16
    )
    assert row["calls_per_s"] == {"httpx": 40.0, "client": 40.0, "llm_batch": 36.4}
    assert row["llm_batch_share_of_client"] == 0.91
    assert row["llm_batch_share_of_ideal"] == 0.91
    assert row["bridge_ms_per_call"] == 2.5


def test_local_and_anymodel_summaries_match_their_reports() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_anymodel imports its sibling
    try:
        local = _load("bench_local")
        anymodel = _load("bench_anymodel")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    outcomes = [
        local.Outcome(8000, "rlm", 1, True, 30.0, 2, ""),
        local.Outcome(8000, "rlm", 2, False, 50.0, 4, ""),
    ]
    rows = local.summarize(outcomes, 3, [8000, 32000], ["rlm"])
    assert rows[0] == {
        "length_chars": 8000,
        "method": "rlm",
        "planned": 3,
        "run": 2,
        "correct": 1,
        "accuracy": 0.5,
        "median_wall_s": 40.0,
        "median_turns": 3.0,
    }
    assert rows[1]["run"] == 0 and rows[1]["accuracy"] is None
    done = [anymodel.Outcome("oolong", 8000, "served", "rlm", 0, 0.5, 10.0, 2, "p", "")]
    wanted = [("oolong", 8000, "served", "rlm", 0), ("oolong", 8000, "served", "rlm", 1)]
    (row,) = anymodel.summarize(done, wanted)
    assert (row["unit"], row["planned"], row["run"], row["mean_score"]) == ("tokens", 2, 1, 0.5)


def test_growth_ceilings_divide_what_is_there_by_what_each_sandbox_takes() -> None:
    growth = _load("bench_growth")
    from engine.sandbox import SandboxConfig

    usage = {"cgroup": 50.0, "host_pss": 100.0, "threads": 90.0}
    busy = {"cgroup": 80.0, "host_pss": 200.0, "threads": 100.0}
    row = {
        "idle": usage,
        "busy": busy,
        "idle_host_mb_per_sandbox": -5.0,  # a shared host's noise: no estimate from it
        "busy_host_mb_per_sandbox": 250.0,
        "fds_per_sandbox": 10.0,
    }
    baseline = {"mem_available_mb": 10_000.0, "fds": 0, "threads": 0}
    got = growth.ceilings([row], baseline, SandboxConfig(memory_bytes=1 << 30))
    limits = got["estimated_max_sandboxes"]
    assert limits["memory_idle"] == 100 and limits["memory_busy"] == 50
    assert limits["memory_idle_cgroup"] == 200 and limits["memory_busy_cgroup"] == 125
    assert limits["memory_idle_host_delta"] is None and limits["memory_busy_host_delta"] == 40
    assert limits["memory_every_sandbox_at_its_limit"] == 9
    assert limits["host_threads"] == got["threads_limit"] // 100
    primary = ("memory_idle", "memory_busy", "orchestrator_open_files", "host_threads")
    assert got["first_to_give_out_at"] == min(limits[k] for k in primary)
    assert limits[got["first_to_give_out"]] == got["first_to_give_out_at"]
