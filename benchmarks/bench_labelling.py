"""How well a sub-model labels records through ``llm_map``, by the instruction it is given.

Run with ``python -m benchmarks.bench_labelling [--api-base URL] [--n 60]`` against any
OpenAI-compatible server (default: the embedded model's, ``rlm model serve``, port 8765).
Prints numbers, asserts nothing; writes ``out/bench/labelling.json``.

OOLONG-style records (``Date: ... || User: ... || Instance: <TREC question>``, gold coarse
labels from ``rlm data pull oolong``) are labelled by the kernel's own ``llm_map`` (the code in
``sandbox-image/rlm_runtime/helpers.py``, calls sent straight to the server) with ``choices``
set to OOLONG's six labels, under two instructions:

* ``bare``: what the engine's labelling step asked before, "Which label fits this one?";
* ``described``: :func:`engine.rlm.nudges.labelling_instruction` of the OOLONG question, the
  query's statements (what the records are, what the labels classify) and then the ask.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from engine.eval.oolong import PREAMBLE
from engine.eval.trec import LABELS, load_questions
from engine.rlm.nudges import labelling_instruction
from engine.sandbox.fake import _runtime

QUERY = f"{PREAMBLE}\n\nWhich label is the most common in the data? Answer as 'Label: <label>'."
INSTRUCTIONS = {"bare": "Which label fits this one?", "described": labelling_instruction(QUERY)}


def _server_batch(client: httpx.Client, default: str) -> Callable[..., list[str]]:
    """``llm_batch`` for ``llm_map``: one call after the other (a CPU server runs one at a
    time anyway), greedy, as the bridge would send them."""

    def batch(prompts: list[str], model: str | None = None) -> list[str]:
        replies = []
        for prompt in prompts:
            response = client.post(
                "/chat/completions",
                json={
                    "model": model or default,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0,
                    "max_tokens": 400,
                },
            )
            response.raise_for_status()
            replies.append(str(response.json()["choices"][0]["message"]["content"]))
        return replies

    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="local", help="model name sent to the server")
    parser.add_argument("--n", type=int, default=60, help="records to label")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench/labelling.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    questions = rng.sample(load_questions(), args.n)
    records = [
        f"Date: Jan {i % 28 + 1:02d}, 2021 || User: {rng.randint(10_000, 99_999)} || "
        f"Instance: {q.text}"
        for i, q in enumerate(questions)
    ]
    gold = [q.label for q in questions]
    llm_map: Callable[..., Any] = _runtime("helpers").llm_map
    results: dict[str, Any] = {"n": args.n, "seed": args.seed, "gold": Counter(gold)}
    with httpx.Client(base_url=args.api_base, timeout=900) as client:
        batch = _server_batch(client, args.model)
        for name, instruction in INSTRUCTIONS.items():
            start = time.perf_counter()
            labels = llm_map(records, instruction, choices=list(LABELS), _batch=batch)
            seconds = time.perf_counter() - start
            accuracy = sum(a == g for a, g in zip(labels, gold, strict=True)) / args.n
            results[name] = {
                "accuracy": round(accuracy, 3),
                "seconds": round(seconds, 1),
                "labels": Counter(labels),
                "instruction": instruction,
            }
            print(f"{name:<10} accuracy {accuracy:.2f}  {seconds:7.0f} s  {Counter(labels)}")
    print(f"{'gold':<10} {Counter(gold)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
