"""Scorers against hand-worked cases."""

from __future__ import annotations

import pytest

from engine.eval.scoring import (
    choice_score,
    contains_fraction,
    exact_after_colon,
    numeric_score,
    pair_f1,
    parse_choice,
    parse_pairs,
)


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The special magic number is 1234567.", ["1234567"], 1.0),
        ("the uuid is ABCDEF12-0000", ["abcdef12-0000"], 1.0),
        ("I could not find it", ["1234567"], 0.0),
        ("1234567 and 7654321", ["1234567", "7654321"], 1.0),
        ("only 1234567", ["1234567", "7654321"], 0.5),
        ("123456", ["1234567"], 0.0),
        ("anything", [], 0.0),
    ],
)
def test_contains_fraction(prediction: str, golds: list[str], expected: float) -> None:
    assert contains_fraction(prediction, golds) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("Answer: 12", 12, 1.0),
        ("Answer: 13", 12, 0.75),
        ("Answer: 10", 12, 0.5625),  # 0.75 ** 2
        ("Answer: 1,204", 1204, 1.0),
        ("There are 7 of them. Answer: 9", 7, 0.5625),  # the number after the last ':'
        ("I think 5", 5, 1.0),  # no colon: the number in the text
        ("Answer: none", 3, 0.0),  # no number anywhere
        ("Answer: -2", 0, 0.5625),
    ],
)
def test_numeric_score(prediction: str, gold: int, expected: float) -> None:
    assert numeric_score(prediction, gold) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("Label: location", "location", 1.0),
        ("Label: **Location**.", "location", 1.0),
        ("The answer is Label: 'human being'", "human being", 1.0),
        ("Label: human", "human being", 0.0),
        ("Answer: more common than", "more common than", 1.0),
        ("Answer: less common than", "more common than", 0.0),
        ("User: 44436", "44436", 1.0),
        ("User: 44437", "44436", 0.0),
        ("location", "location", 1.0),  # no colon: the whole text
        ("It is location, I think", "location", 0.0),
    ],
)
def test_exact_after_colon(prediction: str, gold: str, expected: float) -> None:
    assert exact_after_colon(prediction, gold) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("(1, 2)\n(3, 4)", {("1", "2"), ("3", "4")}),
        ("(2, 1), (1, 2)", {("1", "2")}),  # order and duplicates do not matter
        ("12345, 67890\n11111, 22222", {("12345", "67890"), ("11111", "22222")}),
        ("none", set()),
        ("(5, 5)", set()),  # a user is not paired with itself
        # A printed Python tuple quotes its ids; records name them "User: <id>".
        ("('20002', '82813')\n(\"1\", \"2\")", {("20002", "82813"), ("1", "2")}),
        ("('User: 69731', 'User: 13445')", {("13445", "69731")}),
        ("(user id 7, User #8)\n(User 9, user 10)", {("7", "8"), ("10", "9")}),
        ("User: 3, User: 4", {("3", "4")}),
        ("(user1, user2)", {("user1", "user2")}),  # an id that starts with the word stays whole
        ("(userA, 5)", {("5", "userA")}),
        # One pair per line with the records' own separator, or other plain ones.
        ("19437 || 22710\n22710 || 19437\n5 | 6", {("19437", "22710"), ("5", "6")}),
        ("7 and 8\n9 - 10\n11 12\n13/14", {("7", "8"), ("10", "9"), ("11", "12"), ("13", "14")}),
        ("1, 2, 3", set()),  # three ids on a line are not a pair
        ("no pairs\nnone - found", set()),  # prose is no pair
        ("userA, userB", {("userA", "userB")}),
    ],
)
def test_parse_pairs(prediction: str, expected: set[tuple[str, str]]) -> None:
    assert parse_pairs(prediction) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("(1, 2)\n(3, 4)", [["1", "2"], ["3", "4"]], 1.0),
        ("(1, 2)", [["1", "2"], ["3", "4"]], 2 / 3),  # P=1, R=1/2
        ("(1, 2)\n(5, 6)", [["1", "2"], ["3", "4"]], 0.5),  # P=1/2, R=1/2
        ("(1, 2)\n(5, 6)\n(7, 8)\n(9, 10)", [["1", "2"]], 0.4),  # P=1/4, R=1
        ("(5, 6)", [["1", "2"]], 0.0),
        ("none", [], 1.0),
        ("(1, 2)", [], 0.0),
    ],
)
def test_pair_f1(prediction: str, gold: list[list[str]], expected: float) -> None:
    assert pair_f1(prediction, gold) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("Answer: D", "D"),
        ("The answer is (A).", "A"),
        ("answer: b", None),  # lower-case letters are not options
        ("A function defines it, so Answer: C", "C"),  # the article "A" is not an answer
        ("I pick (B) over (D); final answer (D)", "D"),
        ("C. httpx/_api.py", "C"),
        ("no idea", None),
    ],
)
def test_parse_choice(prediction: str, expected: str | None) -> None:
    assert parse_choice(prediction) == expected


def test_choice_score() -> None:
    assert choice_score("Answer: B", "B") == 1.0
    assert choice_score("Answer: B", "C") == 0.0
    assert choice_score("", "A") == 0.0


OPTIONS = ["httpx/_api.py", "httpx/_api.pyi", "anyio/to_thread.py", "uvicorn/main.py"]


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("anyio/to_thread.py", "C"),  # the option's text instead of its letter
        ("`uvicorn/main.py`.", "D"),
        ("HTTPX/_API.PY", "A"),  # exact match wins over A being inside B's text
        ("It is defined in anyio/to_thread.py.", "C"),
        ("It is httpx/_api.pyi", "B"),  # not A: a whole mention only
        ("httpx/_api.pyi or uvicorn/main.py", None),  # names two options
        ("anyio/from_thread.py", None),
        ("Answer: B (anyio/to_thread.py)", "B"),  # a letter, when given, decides
    ],
)
def test_parse_choice_by_option_text(prediction: str, expected: str | None) -> None:
    assert parse_choice(prediction, OPTIONS) == expected
    assert choice_score(prediction, "C", OPTIONS) == float(expected == "C")
