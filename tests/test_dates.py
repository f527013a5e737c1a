"""Date ranges in questions: read on the orchestrator's side, kept in the kernel by
`in_date_range`.

The labelling step keeps only the records in the question's range before labelling them
(``Watcher._date_range_code``); these tests run its code with the real kernel helpers over
records whose labels a stand-in sub-model knows, and check the counts against the records.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.rlm.dates import DateRange, date_range, parse_date, records_dated
from engine.rlm.nudges import Watcher
from engine.sandbox.results import ContextInfo
from tests.module_support import load_module

HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"
helpers = load_module("rlm_helpers_for_dates", HELPERS_FILE)


def _info(text: str) -> ContextInfo:
    return ContextInfo("text", "str", len(text), None, text[:400], load_seconds=0.0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "Find all pairs of users where both users have at least one instance with the label "
            "'entity' dated after Jun 26, 2023 (that day not included).",
            DateRange("Jun 26, 2023", None, inclusive=False),
        ),
        ("How many tickets were opened before 2024-03-10?", DateRange(None, "2024-03-10", False)),
        ("Count the orders placed since 3rd March 2022.", DateRange("3rd March 2022", None, True)),
        ("Which rows are on or before Sept 9 2021?", DateRange(None, "Sept 9 2021", True)),
        (
            "How many calls between Jan 5, 2020 and Feb 1, 2020 were complaints?",
            DateRange("Jan 5, 2020", "Feb 1, 2020", True),
        ),
        (
            "Entries after 2020-01-01 and before 2020-02-01 (not included)",
            DateRange("2020-01-01", "2020-02-01", False),
        ),
        ("Entries after 2020-01-01 (that day included)", DateRange("2020-01-01", None, True)),
    ],
)
def test_a_questions_date_range_is_read_from_its_words(query: str, expected: DateRange) -> None:
    assert date_range(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "What is the most common label?",
        "What happened after 2023?",  # a year, not a day
        "Rows after Feb 30, 2023",  # no such day
        "Rows before Jan 1, 2020 or after Jan 1, 2021",  # two ranges
        "Rows after Jan 1, 2020 and after Mar 1, 2020",  # two bounds on one side
        "Rows since Jan 1, 2020 and before Mar 1, 2020 (not included)",  # mixed ends
        "Rows after 06/07/2021",  # ambiguous: June 7 or July 6
    ],
)
def test_no_range_when_the_question_names_none_or_is_unclear(query: str) -> None:
    assert date_range(query) is None


@pytest.mark.parametrize(
    "text",
    [
        "Jun 26, 2023",
        "June 26 2023",
        "26 June 2023",
        "26th Jun, 2023",
        "2023-06-26",
        "sept 9, 2021",
    ],
)
def test_both_sides_read_the_same_day(text: str) -> None:
    day = parse_date(text)
    assert day is not None
    assert helpers.record_date(f"Date: {text} || User: 5") == day


def test_dated_keeps_the_items_in_range_and_says_what_it_takes() -> None:
    items = [
        "Date: Jun 26, 2023 || User: 1",
        "2023-06-27T10:00:00 user 2",
        "no date here",
        "Date: Feb 30, 2023, re-filed 1 Jan 2024",  # not a day, then a day
    ]
    assert helpers.in_date_range(items, after="Jun 26, 2023") == [items[1], items[3]]
    assert helpers.in_date_range(items, after="Jun 26, 2023", inclusive=True) == [
        items[0],
        items[1],
        items[3],
    ]
    assert helpers.in_date_range(items, before=dt.date(2023, 6, 27), after="2023-01-01") == [
        items[0]
    ]
    assert helpers.in_date_range([{"when": "2023-06-28", "id": 3}], after="Jun 26, 2023") == [
        {"when": "2023-06-28", "id": 3}
    ]
    with pytest.raises(ValueError, match="is not a date; write it like"):
        helpers.in_date_range(items, after="last week")
    with pytest.raises(ValueError, match="give after=, before="):
        helpers.in_date_range(items)
    with pytest.raises(TypeError, match="list of records"):
        helpers.in_date_range("Date: Jun 26, 2023")


def test_records_count_as_dated_when_most_preview_lines_hold_a_day() -> None:
    assert records_dated(["2024-01-02 a", "2024-01-03 b", "2024-01-04 c"])
    assert not records_dated(["2024-01-02 a", "b", "c"])
    assert not records_dated([])


LABELS = ("refund", "delivery", "billing")


def _records(seed: int, count: int = 120) -> tuple[list[str], dict[str, str]]:
    """Support tickets, one per line: a date, a customer, a text; the label is hidden (the
    stand-in sub-model reads it from the returned map, as a real one would judge it)."""
    rng = random.Random(seed)
    start = dt.date(2024, 1, 1)
    lines, hidden = [], {}
    for n in range(count):
        day = start + dt.timedelta(days=rng.randrange(120))
        line = f"{day.isoformat()} | Customer: {rng.randrange(100, 130)} | ticket {n}"
        lines.append(line)
        hidden[line] = rng.choice(LABELS)
    return lines, hidden


def _run(code: str, namespace: dict[str, Any]) -> list[str]:
    printed: list[str] = []
    namespace["print"] = lambda *args: printed.append(" ".join(map(str, args)))
    exec(code, namespace)
    return printed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_labelling_step_labels_and_counts_only_the_questions_days(seed: int) -> None:
    lines, hidden = _records(seed)
    context = "\n".join(lines)
    query = (
        "Each ticket is one of these labels: refund, delivery, billing. List all pairs of "
        "customers who both have at least one 'refund' ticket dated on or after 2024-03-10."
    )
    watcher = Watcher.for_context(query, _info(context))
    code = watcher.labelling_code()
    assert code is not None and "in_date_range(items, after='2024-03-10', inclusive=True)" in code
    sub_calls: list[int] = []

    def llm_map(items: list[str], instruction: str, choices: list[str]) -> list[str]:
        sub_calls.append(len(items))
        return [hidden[item] for item in items]

    namespace: dict[str, Any] = {"context": context, "llm_map": llm_map}
    namespace.update(in_date_range=helpers.in_date_range, pairs_of=helpers.pairs_of)
    printed = _run(code, namespace)
    cutoff = dt.date(2024, 3, 10)
    kept = [line for line in lines if dt.date.fromisoformat(line[:10]) >= cutoff]
    assert sub_calls == [len(kept)]  # the records out of range are not labelled
    assert printed[0].startswith(f"{len(kept)} of {len(lines)} records dated after")
    assert namespace["counts"] == {label: Counter(map(hidden.get, kept))[label] for label in LABELS}
    refund = sorted({line.split("Customer: ")[1][:3] for line in kept if hidden[line] == "refund"})
    assert namespace["with_label"]["refund"] == refund
    watcher.labelled = True
    _, step = watcher.next_step()
    step_printed = _run(step, namespace)
    gold = [(a, b) for i, a in enumerate(refund) for b in refund[i + 1 :]]
    assert step_printed[-1] == str(helpers.PairList(gold))


def test_without_dated_records_or_a_range_the_step_labels_every_record() -> None:
    lines, _ = _records(4)
    context = "\n".join(lines)
    listed = "Each ticket is one of these labels: refund, delivery, billing."
    no_range = Watcher.for_context(
        f"{listed} How many 'refund' tickets are there?",
        _info(context),
    )
    assert "in_date_range(" not in (no_range.labelling_code() or "in_date_range(")
    undated = "\n".join(line[13:] for line in lines)
    no_dates = Watcher.for_context(
        f"{listed} How many 'refund' tickets are dated after 2024-03-10?",
        _info(undated),
    )
    assert "in_date_range(" not in (no_dates.labelling_code() or "in_date_range(")
