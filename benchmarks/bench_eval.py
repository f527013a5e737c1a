"""How long benchmark generation takes: seconds per item by benchmark and context length.

Prints a table; asserts nothing. Run: ``make bench-eval``, which first fetches the source data
(``rlm data pull sniah oolong``, into ``$RLM_DATA_DIR`` or ``~/.cache/rlm/data``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import write_results
from engine.eval.base import format_length, parse_lengths
from engine.eval.registry import ALL, get_benchmark
from engine.eval.tokens import get_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="8k,32k,128k")
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="default out/bench/eval.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []

    started = time.perf_counter()
    tok = get_tokenizer()
    print(f"tokenizer {tok.name} loaded in {time.perf_counter() - started:.2f} s")
    text = "The quick brown fox jumps over the lazy dog. " * 20_000
    started = time.perf_counter()
    count = tok.count(text)
    took = time.perf_counter() - started
    print(f"token counting: {count} tokens in {took:.3f} s ({count / took / 1e6:.2f} M tokens/s)")
    counting = {"tokens": count, "seconds": round(took, 3), "tokenizer": tok.name}

    print(f"{'benchmark':14} {'length':>8} {'s/item':>8} {'first item (incl. loading)':>28}")
    for name in ALL:
        bench = get_benchmark(name)
        for length in parse_lengths(args.lengths):
            started = time.perf_counter()
            bench.items(length, 1, seed=0)
            first = time.perf_counter() - started
            started = time.perf_counter()
            bench.items(length, args.n, seed=1)
            per_item = (time.perf_counter() - started) / args.n
            print(f"{name:14} {format_length(length):>8} {per_item:8.3f} {first:28.3f}")
            rows.append(
                {
                    "benchmark": name,
                    "length": length,
                    "s_per_item": round(per_item, 3),
                    "first_item_s": round(first, 3),
                }
            )
    print(f"wrote {write_results('eval', {'token_counting': counting, 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
