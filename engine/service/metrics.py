"""Prometheus metrics of the service, fed by job trajectory events, rendered as text.

Counters and histograms live in memory (they restart at zero with the service, as Prometheus
expects); job counts by state come from the store at scrape time so they survive restarts.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

# Seconds; model calls and cells are sub-second to minutes, whole jobs seconds to hours.
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """A cumulative-bucket histogram per label set."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = defaultdict(lambda: [0] * len(self.buckets))
        self.sums: dict[Labels, float] = defaultdict(float)
        self.totals: dict[Labels, int] = defaultdict(int)

    def observe(self, value: float, labels: Labels = ()) -> None:
        counts = self.counts[labels]
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                counts[index] += 1
        self.sums[labels] += value
        self.totals[labels] += 1


class Metrics:
    """Everything ``GET /metrics`` reports. Thread-safe; cheap to update per event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, float] = defaultdict(float)
        self.model_latency = Histogram(_CALL_BUCKETS)
        self.cell_latency = Histogram(_CALL_BUCKETS)
        self.job_latency = Histogram(_JOB_BUCKETS)
        self.queue_wait = Histogram(_JOB_BUCKETS)
        self._live_tasks: set[str] = set()

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.counters[name][tuple(sorted(labels.items()))] += value

    def add_gauge(self, name: str, delta: float) -> None:
        with self._lock:
            self.gauges[name] += delta

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def observe_job(self, wall_s: float, queued_s: float, status: str) -> None:
        with self._lock:
            self.job_latency.observe(wall_s, (("status", status),))
            self.queue_wait.observe(queued_s)

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Count model calls, tokens, cost, latencies and live sandboxes from one event."""
        kind = event.get("type")
        if kind == "sandbox_ready":
            with self._lock:
                self._live_tasks.add(str(event.get("task_id")))
                self.gauges["sandboxes_live"] = len(self._live_tasks)
        elif kind == "run_end":
            # A run whose sandbox never started also ends with run_end: only count known ones.
            with self._lock:
                self._live_tasks.discard(str(event.get("task_id")))
                self.gauges["sandboxes_live"] = len(self._live_tasks)
        elif kind == "cell":
            with self._lock:
                self.cell_latency.observe(float(event.get("duration_s") or 0.0))
        elif kind == "turn" or (kind == "sub_call" and event.get("kind") == "llm_query"):
            role = "root" if kind == "turn" and event.get("depth", 1) == 1 else "sub"
            status = "ok" if kind == "turn" else str(event.get("status") or "ok")
            usage = event.get("usage") or {}
            labels = (("role", role),)
            with self._lock:
                self.counters["model_calls_total"][(("role", role), ("status", status))] += 1
                prompt = float(usage.get("prompt_tokens") or 0)
                completion = float(usage.get("completion_tokens") or 0)
                self.counters["tokens_total"][(("kind", "prompt"), ("role", role))] += prompt
                self.counters["tokens_total"][(("kind", "completion"), ("role", role))] += (
                    completion
                )
                self.counters["cost_usd_total"][labels] += float(usage.get("cost_usd") or 0.0)
                self.model_latency.observe(float(event.get("duration_s") or 0.0), labels)

    def render(self, job_counts: Mapping[str, int], extra_gauges: Mapping[str, float]) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP rlm_{name} {help_text}")
            out.append(f"# TYPE rlm_{name} {kind}")

        family("jobs", "gauge", "Jobs in the store by state.")
        for state, count in job_counts.items():
            out.append(f'rlm_jobs{{state="{state}"}} {count}')
        with self._lock:
            gauges = {**self.gauges, **extra_gauges}
            family("sandboxes_live", "gauge", "Sandboxes (containers) currently running.")
            out.append(f"rlm_sandboxes_live {gauges.get('sandboxes_live', 0):g}")
            for name, value in sorted(gauges.items()):
                if name == "sandboxes_live":
                    continue
                family(name, "gauge", _GAUGE_HELP.get(name, name.replace("_", " ") + "."))
                out.append(f"rlm_{name} {value:g}")
            for name in ("model_calls_total", "tokens_total", "cost_usd_total", "jobs_total"):
                family(name, "counter", _COUNTER_HELP[name])
                for labels, value in sorted(self.counters.get(name, {}).items()):
                    out.append(f"rlm_{name}{_fmt(labels)} {value:g}")
            for name, hist, help_text in (
                ("model_call_seconds", self.model_latency, "Model call latency."),
                ("cell_seconds", self.cell_latency, "Code cell execution time."),
                ("job_seconds", self.job_latency, "Job run time (start to end)."),
                ("job_queue_seconds", self.queue_wait, "Time jobs waited for a sandbox slot."),
            ):
                family(name, "histogram", help_text)
                out.extend(_render_histogram(f"rlm_{name}", hist))
        return "\n".join(out) + "\n"


_GAUGE_HELP = {
    "sandbox_slots_in_use": "Admission slots held by running jobs.",
    "sandbox_slots_total": "Admission slots (the most jobs running at once).",
    "sandbox_pool_ready": "Warm sandboxes waiting for a task (they count within the slots).",
    "sandbox_pool_hits": "Tasks that got a warm sandbox since the service started.",
    "sandbox_pool_misses": "Tasks that asked the warm pool and started cold (see pool.miss logs).",
    "sandbox_pool_discarded": "Warm sandboxes found dead before a task got them (pool.discarded).",
}
_COUNTER_HELP = {
    "model_calls_total": "Model calls by role (root, sub) and status.",
    "tokens_total": "Tokens by role and kind (prompt, completion).",
    "cost_usd_total": "Model cost in US dollars by role.",
    "jobs_total": "Jobs that ended, by final state.",
}


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_histogram(name: str, hist: Histogram) -> list[str]:
    lines: list[str] = []
    for labels in sorted(hist.totals):
        counts = hist.counts[labels]
        for bound, count in zip(hist.buckets, counts, strict=True):
            lines.append(f"{name}_bucket{_fmt((*labels, ('le', f'{bound:g}')))} {count}")
        lines.append(f"{name}_bucket{_fmt((*labels, ('le', '+Inf')))} {hist.totals[labels]}")
        lines.append(f"{name}_sum{_fmt(labels)} {hist.sums[labels]:g}")
        lines.append(f"{name}_count{_fmt(labels)} {hist.totals[labels]}")
    return lines
