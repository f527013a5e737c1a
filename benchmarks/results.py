"""What every benchmark shares: percentiles, summaries and the machine-readable results file.

Each benchmark prints its numbers and also writes them to ``out/bench/<name>.json`` with
:func:`write_results`: the numbers under their own keys plus a ``meta`` block (when, on what
machine, from which commit, with which arguments), so runs on different days or machines can be
compared without re-reading the printed text.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Where ``write_results`` puts ``<name>.json`` unless told otherwise.
DEFAULT_DIR = ROOT / "out" / "bench"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100) of ``values``.

    Nearest rank (no interpolation): the result is always one of the measured values, which is
    what a latency report should quote. Raises ``ValueError`` on an empty sequence or a ``q``
    outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """``n``, ``p50``, ``p95``, ``p99``, ``min``, ``max`` and ``mean`` of ``values`` x ``scale``.

    ``scale`` converts units (1000 turns seconds into milliseconds); values are rounded to
    ``digits`` decimals. An empty sequence gives ``{"n": 0}``.
    """
    if not values:
        return {"n": 0}
    scaled = [v * scale for v in values]
    out: dict[str, float] = {"n": len(scaled)}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        out[name] = round(percentile(scaled, q), digits)
    out["min"] = round(min(scaled), digits)
    out["max"] = round(max(scaled), digits)
    out["mean"] = round(sum(scaled) / len(scaled), digits)
    return out


def ratio(numerator: float | None, denominator: float | None, digits: int = 1) -> float | None:
    """``numerator / denominator`` rounded, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def git_commit() -> str | None:
    """The checkout's commit (HEAD), or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _mem_total_mb() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def machine_meta(name: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and when a result was measured: name, UTC time, commit, CPUs, memory, load,
    Python."""
    return {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        # A shared machine's load at the end of the run: numbers taken under load read so.
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "argv": list(sys.argv[1:] if argv is None else argv),
    }


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: NaN and infinities become None (JSON has no spelling for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(
    name: str,
    data: Mapping[str, Any],
    path: Path | None = None,
    argv: Sequence[str] | None = None,
) -> Path:
    """Write ``data`` plus a ``meta`` block to ``path`` (default ``out/bench/<name>.json``).

    The file is replaced atomically (written next to it, then renamed), so a reader never sees
    half a result and an interrupted run leaves the previous file. Returns the path written.
    """
    if "meta" in data:
        raise ValueError("'meta' is reserved for the measurement's context")
    target = path or DEFAULT_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {**_jsonable(dict(data)), "meta": machine_meta(name, argv)}
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    partial.replace(target)
    return target
