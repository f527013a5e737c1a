"""``pairs_of``: every pair of values once, ordered, printed as a pair answer is written.

Pure logic: the kernel helper module is loaded from ``sandbox-image/rlm_runtime/helpers.py``
(the kernel path is covered in ``test_helpers_kernel.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.module_support import load_module

HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"
helpers = load_module("rlm_helpers_pairs_under_test", HELPERS_FILE)


def test_pairs_of_lists_each_pair_once_in_order() -> None:
    found = helpers.pairs_of(["30", "4", "200", "4"])
    # Digit ids order as numbers; a repeated value and a value with itself make no pair.
    assert found == [("4", "30"), ("4", "200"), ("30", "200")]
    assert str(found) == "(4, 30)\n(4, 200)\n(30, 200)"


def test_pairs_of_orders_any_length_of_digits_and_mixed_values() -> None:
    huge = "9" * 5_000  # int() refuses it
    assert helpers.pairs_of([huge, "10", "b", 7]) == [
        (7, "10"), (7, huge), (7, "b"), ("10", huge), ("10", "b"), (huge, "b")
    ]  # fmt: skip


def test_pairs_of_with_others_takes_one_from_each() -> None:
    found = helpers.pairs_of(["b", "a"], ["a", "c"])
    assert found == [("a", "b"), ("a", "c"), ("b", "c")]


def test_pairs_of_accepts_dicts_and_prints_none_when_empty() -> None:
    assert helpers.pairs_of({"u1": 3, "u2": 1}) == [("u1", "u2")]
    empty = helpers.pairs_of(["only"])
    assert empty == [] and str(empty) == "none" and repr(empty) == "none"
    assert str(helpers.pairs_of([], ["x"])) == "none"


def test_pairs_of_refuses_a_string_and_too_many_values_with_what_to_do() -> None:
    with pytest.raises(TypeError, match="not one string"):
        helpers.pairs_of("12345")
    many = [str(i) for i in range(2_001)]
    with pytest.raises(ValueError, match="keep only the values that qualify first"):
        helpers.pairs_of(many)
    assert len(helpers.pairs_of(many[:300])) == 300 * 299 // 2
