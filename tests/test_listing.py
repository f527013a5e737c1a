"""The listing check's pure parts: which questions ask for every item of a kind, and which
answers are only part of a listing an earlier cell printed."""

from __future__ import annotations

import pytest

from engine.rlm.listing import (
    asks_for_many,
    asks_for_pairs,
    holds_pair,
    line_shape,
    partial_listing,
    printed_name,
    unpaired_answer,
)


@pytest.mark.parametrize(
    "query",
    [
        "Find all pairs of users where both users have at least one instance with the label "
        "'entity'.",
        "In the above data, list all pairs of user IDs (no duplicate pairs).",
        "List the users who asked about a place.",
        "Which pairs of users both asked about a person?",
        "What are all the error codes in the log?",
        "Give every function that opens a socket, one per line.",
        "Identify each city mentioned in the report.",
        "Read the log and then list the failing tests.",
        "Please enumerate the services it starts.",
    ],
)
def test_questions_asking_for_every_item_of_a_kind(query: str) -> None:
    assert asks_for_many(query)


@pytest.mark.parametrize(
    "query",
    [
        "What is the special magic number for quiet-lake mentioned in the provided text?",
        "Which label is the most common among all the questions?",
        "Each line has a user id and a question. Which user asked the most questions?",
        "How many lines in all the text mention 'error'?",
        "Which file defines the function that finds FINAL(...) in a reply?",
        "Answer 'all' if every test passed. Did the build succeed?",  # quoted and described
        # An OOLONG question: "list" as a noun, "each" in a statement about the data.
        "The context is a list of data points, one per line. Each instance is a question that "
        "belongs to exactly one of these labels: entity, location. The labels are not given: "
        "infer each one from the question itself.\n\nWhich label is the most common in the "
        "data? Give your final answer in the form 'Label: <label>'.",
        "Keep a list of the names you see. Which name comes first?",
    ],
)
def test_questions_asking_for_one_value(query: str) -> None:
    assert not asks_for_many(query)


PAIRS_CELL = "found = pairs_of(keep)\nprint(len(found), 'pairs:')\nprint(found)"
PAIRS_OUT = "3 pairs:\n(8, 9)\n(8, 12)\n(9, 12)"


def test_one_line_of_a_printed_listing_is_a_partial_answer() -> None:
    found = partial_listing("(8, 12)", [("", "(1, 2)\n(3, 4)"), (PAIRS_CELL, PAIRS_OUT)])
    assert found is not None
    assert (found.total, found.given, found.name, found.code) == (3, 1, "found", PAIRS_CELL)
    # Spacing aside; two of three lines are still part.
    found = partial_listing("(8,  9)\n (9, 12)", [(PAIRS_CELL, PAIRS_OUT)])
    assert found is not None and (found.total, found.given) == (3, 2)


@pytest.mark.parametrize(
    "answer",
    [
        "(8, 9)\n(8, 12)\n(9, 12)",  # all of them
        "(8, 9)\n(9, 12)\n(8, 12)",  # all of them, in another order
        "(8, 13)",  # not a line of it
        "8",  # inside a line, not a whole line
        "3 pairs:",  # the only line of its shape
        "(8, 9)\n3 pairs:",  # lines of two shapes
        "",
    ],
)
def test_answers_that_are_not_part_of_a_listing(answer: str) -> None:
    assert partial_listing(answer, [(PAIRS_CELL, PAIRS_OUT)]) is None


def test_the_preview_is_not_a_listing_and_the_latest_listing_counts() -> None:
    preview = "Date: Jan 01 || User: 7\nDate: Jan 02 || User: 8"
    assert partial_listing("Date: Jan 01 || User: 7", [("", preview)]) is None
    older = ("print(a)", "(1, 2)\n(3, 4)\n(5, 6)\n(8, 9)")
    found = partial_listing("(8, 9)", [older, (PAIRS_CELL, PAIRS_OUT)])
    assert found is not None and found.code == PAIRS_CELL


def test_lines_of_one_listing_share_a_shape() -> None:
    assert line_shape("(12, 345)") == line_shape("(7,  8)") == "(w, w)"
    assert line_shape("pkg/a.py") == line_shape("src/main.rs")
    assert line_shape("(12, 345)") != line_shape("3 pairs:")


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("print(found)", "found"),
        ("print(len(found))\nprint(found)", "found"),
        ("print('\\n'.join(hits))", "hits"),
        ("print('\\n'.join(map(str, hits)))", "hits"),
        ("print(*rows, sep='\\n')", "rows"),
        ("print(sorted(keep))\nprint('done')", "keep"),
        ("for p in found:\n    print(p)", "found"),
        ("for a, b in found:\n    print(a)", None),
        ("for p in pairs_of(keep):\n    print(p)", None),
        ("print(len(found), 'pairs')", None),
        ("print(", None),
    ],
)
def test_the_variable_a_cell_printed_whole(code: str, name: str | None) -> None:
    assert printed_name(code) == name


@pytest.mark.parametrize(
    ("answer", "pair"),
    [
        ("(8, 9)", True),
        ("The pairs are (8, 9) and (9, 12).", True),
        ("19437 || 22710", True),
        ("User: 5, User: 6", True),
        ("none", False),
        ("['18441', '36985', '54012']", False),  # the users, not their pairs
        ("18441\n36985", False),
        ("", False),
    ],
)
def test_an_answer_holds_a_pair(answer: str, pair: bool) -> None:
    assert holds_pair(answer) is pair


def test_an_answer_without_pairs_after_printed_pairs_goes_back() -> None:
    found = unpaired_answer("['8', '9', '12']", [("", "(1, 2)"), (PAIRS_CELL, PAIRS_OUT)])
    assert found is not None
    assert (found.total, found.given, found.name, found.code) == (3, 0, "found", PAIRS_CELL)
    assert unpaired_answer("none", [("print(keep)", "['8', '9']")]) is None  # no pairs printed
    assert unpaired_answer("none", [("", "(1, 2)\n(3, 4)")]) is None  # only the preview
    assert unpaired_answer("(8, 9)", [(PAIRS_CELL, PAIRS_OUT)]) is None


def test_only_questions_about_pairs_ask_for_pairs() -> None:
    assert asks_for_pairs("Find all pairs of users who both asked about a 'place'.")
    assert asks_for_pairs("Which pairs of files import each other?")
    assert not asks_for_pairs("List the users who asked about a place.")
    assert not asks_for_pairs("How many 'pairs' are in the text?")  # quoted: data, not a word
    assert not asks_for_pairs("Which pair of users asked the most questions?")  # one pair
