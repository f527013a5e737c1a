"""Print the attack catalogue's results (written by ``tests/attacks/conftest.py``) as a table.

``make attacks`` runs the catalogue, then this; the Markdown table goes into the README's security
section. With several rows for one test (re-runs), the last one wins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.attacks.conftest import RESULTS


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    if n < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def main(path: Path = RESULTS) -> int:
    if not path.exists():
        print(f"no attack results at {path}; run `make attacks` first", file=sys.stderr)
        return 1
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[(str(row["test"]), str(row["attack"]))] = row
    print("| attack | limit | outcome | orchestrator RSS growth | host bytes written |")
    print("|---|---|---|---:|---:|")
    for row in rows.values():
        cap = row.get("host_cap_bytes")
        written = _size(row["host_bytes"]) + (f" (cap {_size(cap)})" if cap else "")
        print(
            f"| {row['attack']} | {row['limit']} | {row['outcome']} "
            f"| {_size(row['rss_growth_bytes'])} | {written} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
