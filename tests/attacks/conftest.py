"""The attack catalogue's shared fixtures: measure the orchestrator, record each outcome.

Every attack test ends with ``attack_report(...)``, which records one row (attack, limit, outcome,
orchestrator RSS growth, host bytes written) for ``make attacks`` and asserts the two limits every
attack shares: the orchestrator's peak RSS grew by less than 100 MiB, and the bytes the attack
landed on the host stayed within the cap that applies to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RSS_GROWTH_LIMIT = 100 << 20
RESULTS = Path(os.environ.get("RLM_ATTACKS_OUT", "out/attacks/results.jsonl"))


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


@dataclass
class RssMeter:
    """Peak resident memory growth of one process since :meth:`start`.

    Writing ``5`` to ``/proc/PID/clear_refs`` resets the kernel's high-water mark (``VmHWM``) to
    the current RSS, so the peak reading covers exactly the attack, even if memory was freed again
    before the test looks.
    """

    pid: int
    baseline: int = 0

    def start(self) -> RssMeter:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.baseline = _status_kib(self.pid, "VmRSS") << 10
        return self

    def growth(self) -> int:
        """Peak RSS minus the RSS at :meth:`start`, in bytes."""
        return max(0, (_status_kib(self.pid, "VmHWM") << 10) - self.baseline)


@pytest.fixture
def rss_meter() -> RssMeter:
    """The test process's own RSS (the orchestrator runs in-process); started already.

    For an orchestrator in another process (``rlm serve``), use ``RssMeter(pid).start()``.
    """
    return RssMeter(os.getpid()).start()


AttackReport = Callable[..., None]


@pytest.fixture
def attack_report(request: pytest.FixtureRequest) -> Iterator[AttackReport]:
    """Record one attack's outcome and assert the shared limits (see the module docstring)."""
    rows: list[dict[str, object]] = []

    def report(
        attack: str,
        limit: str,
        outcome: str,
        *,
        rss_growth: int,
        host_bytes: int = 0,
        host_cap: int | None = None,
    ) -> None:
        rows.append(
            {
                "test": request.node.nodeid,
                "attack": attack,
                "limit": limit,
                "outcome": outcome,
                "rss_growth_bytes": rss_growth,
                "host_bytes": host_bytes,
                "host_cap_bytes": host_cap,
            }
        )
        assert rss_growth < RSS_GROWTH_LIMIT, (
            f"{attack}: the orchestrator's RSS grew by {rss_growth >> 20} MiB (limit 100 MiB)"
        )
        if host_cap is not None:
            assert host_bytes <= host_cap, (
                f"{attack}: {host_bytes} bytes landed on the host, past the cap of {host_cap}"
            )

    yield report
    if rows:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
