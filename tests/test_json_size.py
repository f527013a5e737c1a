"""The bound on what a JSON body decodes to (engine/json_size.py), checked against decoding."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine.json_size import BYTES_PER_VALUE, TooManyValues, decoded_overhead, values_bound


def _count(value: Any) -> int:
    """Values in ``value`` as decoded: containers, items, keys."""
    if isinstance(value, dict):
        return 1 + sum(1 + _count(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["str", "int", "float", "list", "dict", "null"] if depth < 4 else ["str"])
    if kind == "str":
        return "".join(rng.choice('ab,:{[]}"\\\u00e9\U0001f600 ') for _ in range(rng.randint(0, 8)))
    if kind == "int":
        return rng.randint(-(10**6), 10**6)
    if kind == "float":
        return rng.random()
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {_random_value(rng, 4): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


@pytest.mark.parametrize("seed", range(200))
def test_the_bound_holds_for_any_document(seed: int) -> None:
    rng = random.Random(seed)
    value = _random_value(rng)
    body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
    real = _count(json.loads(body))
    # Whatever pass answers (the rough count, the quotes, the count outside strings), a
    # result within ``enough`` bounds the real count and a document past it is reported so.
    for enough in (0, 1, real // 2, real - 1, real, 2 * real, 10**9):
        assert values_bound(body, enough) >= min(real, enough + 1), enough


def test_text_with_commas_is_not_counted_as_values() -> None:
    prose = json.dumps({"prompt": 'a, b: [c] {d} \\ " ' * 100_000}).encode()
    assert values_bound(prose, enough=3) <= 3
    assert decoded_overhead(prose, 1 << 20) <= 3 * BYTES_PER_VALUE


@pytest.mark.parametrize(
    "item", [b"{}", b"[]", b"0", b'{"a":1}', b'""', b'"\\\\"', b'"\\""', b'"a,b"']
)
def test_many_tiny_values_are_refused_before_decoding(item: bytes) -> None:
    body = b"[" + b",".join([item] * 200_000) + b"]"
    with pytest.raises(TooManyValues, match="values"):
        decoded_overhead(body, 1 << 20)
