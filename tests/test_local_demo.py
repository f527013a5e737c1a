"""The haystack generator and scorer behind ``rlm demo`` and ``benchmarks/bench_local.py``."""

from __future__ import annotations

import argparse

import pytest

from engine.errors import ConfigError
from engine.rlm.demo import is_correct, make_haystack


def test_haystack_is_seeded_sized_and_has_exactly_one_needle() -> None:
    a = make_haystack(30_000, seed=3)
    assert a == make_haystack(30_000, seed=3)
    assert 30_000 <= len(a.text) <= 30_500
    assert a.text.count(a.secret) == 1
    assert "secret" not in a.text.replace(f"secret access code is {a.secret}", "")
    assert 0.05 < a.position < 0.95
    b = make_haystack(30_000, seed=4)
    assert b.secret != a.secret
    assert b.text != a.text


@pytest.mark.parametrize("n_chars", [2_000, 8_000, 128_000])
def test_haystack_sizes(n_chars: int) -> None:
    hay = make_haystack(n_chars, seed=1)
    assert n_chars <= len(hay.text) <= n_chars + 500
    assert hay.text.count(hay.secret) == 1


def test_needle_positions_spread_over_seeds() -> None:
    positions = [make_haystack(20_000, seed=s).position for s in range(20)]
    assert min(positions) < 0.35
    assert max(positions) > 0.65


def test_scoring_ignores_case_and_punctuation_only() -> None:
    secret = make_haystack(5_000, seed=9).secret
    assert is_correct(f"The code is {secret}.", secret)
    assert is_correct(secret.lower().replace("-", " "), secret)
    assert not is_correct(secret[:-1], secret)
    assert not is_correct("I could not find it", secret)


def test_demo_cli_rejects_a_tiny_haystack() -> None:
    from engine.cli import demo

    parser = argparse.ArgumentParser(prog="rlm")
    demo.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--chars", "100"])
    with pytest.raises(ConfigError, match="at least 500"):
        args.func(args)
