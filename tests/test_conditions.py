"""The test a pairs question puts on each value's label counts, read from its words, and the
labelling step's code that lists the pairs passing it (``engine.rlm.conditions``).

The end-to-end tests run the step's code (the labelling with a stand-in sub-model that knows
each record's label, then the pairs) with the real kernel helpers, and compare the pairs with
the ones the question's conditions give over the records: for the OOLONG-Pairs generator's
questions and for questions worded otherwise.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.eval.oolong import DATE_FORMAT, Record, Window
from engine.eval.pairs import TEMPLATES, make_pairs_question
from engine.eval.trec import LABELS
from engine.rlm.conditions import pair_test
from engine.rlm.nudges import Watcher
from engine.sandbox.results import ContextInfo
from tests.module_support import load_module

HELPERS_FILE = Path(__file__).parents[1] / "sandbox-image" / "rlm_runtime" / "helpers.py"
helpers = load_module("rlm_helpers_for_conditions", HELPERS_FILE)
SHOP = ["refund", "delivery", "billing", "account"]


@pytest.mark.parametrize(
    ("request_", "first", "other"),
    [
        ("Find pairs of users who both have a 'refund' ticket.", "row.get('refund', 0) >= 1", None),
        (
            "List pairs of customers with at least 3 'billing' tickets each.",
            "row.get('billing', 0) >= 3",
            None,
        ),
        (
            "Pairs of users where both have more than two 'refund' tickets and no 'account' one.",
            "row.get('refund', 0) >= 3 and row.get('account', 0) == 0",
            None,
        ),
        (
            "Pairs of users with at most one 'delivery' ticket and exactly 2 'refund' tickets.",
            "row.get('delivery', 0) <= 1 and row.get('refund', 0) == 2",
            None,
        ),
        (
            "Pairs of users who each have a 'refund' or a 'billing' ticket.",
            "row.get('refund', 0) >= 1 or row.get('billing', 0) >= 1",
            None,
        ),
        (
            "Pairs where one customer filed a 'delivery' ticket and the other filed two or "
            "more 'account' tickets.",
            "row.get('delivery', 0) >= 1",
            "row.get('account', 0) >= 2",
        ),
        (
            "Pairs of users with fewer than 3 'billing' tickets but without any 'refund'.",
            "row.get('billing', 0) <= 2 and row.get('refund', 0) == 0",
            None,
        ),
    ],
)
def test_the_pairs_test_is_read_from_the_request(
    request_: str, first: str, other: str | None
) -> None:
    read = pair_test(request_, SHOP)
    assert read is not None
    assert read.first.code() == first
    assert (read.other.code() if read.other else None) == other


def test_a_request_naming_no_label_gives_no_test() -> None:
    assert pair_test("Find all pairs of users who wrote on the same day.", SHOP) is None


def _window(seed: int, users: int = 12, records: int = 160) -> Window:
    rng = random.Random(seed)
    start = dt.date(2022, 1, 1)
    ids = [str(rng.randrange(10_000, 99_999)) for _ in range(users)]
    made = sorted(
        (
            Record(start + dt.timedelta(days=rng.randrange(400)), rng.choice(ids), f"q{n} ?", "")
            for n in range(records)
        ),
        key=lambda r: r.date,
    )
    labelled = tuple(
        Record(r.date, r.user, r.question, rng.choice(LABELS[:3] if i % 3 else LABELS))
        for i, r in enumerate(made)
    )
    text = "\n".join(r.line() for r in labelled)
    return Window(labelled, text, {}, tuple(ids), (), labelled[0].date, labelled[-1].date)


def _run_step(query: str, text: str, label_of: Callable[[str], str]) -> str:
    """The labelling step's printed pairs (its last output line and those after the marker)."""
    info = ContextInfo("text", "str", len(text), None, text[:400], load_seconds=0.0)
    code = Watcher.for_context(query, info).labelling_code()
    assert code is not None
    printed: list[str] = []

    def llm_map(items: list[str], instruction: str, choices: list[str]) -> list[str]:
        return [label_of(item) for item in items]

    namespace: dict[str, Any] = {
        "context": text,
        "llm_map": llm_map,
        "print": lambda *args: printed.append(" ".join(map(str, args))),
        "pairs_of": helpers.pairs_of,
        "in_date_range": helpers.in_date_range,
    }
    exec(code, namespace)
    return str(namespace["found"])


@pytest.mark.parametrize(("seed", "template"), list(itertools.product(range(4), TEMPLATES)))
def test_the_step_lists_the_generators_gold_pairs(seed: int, template: str) -> None:
    # The OOLONG-Pairs generator's five kinds of question (engine.eval.pairs), each with its
    # own random labels, counts and dates; the sub-model's labels are the hidden ones, so the
    # only error left would be the engine's reading of the question.
    window = _window(seed)
    question, gold, _ = make_pairs_question(template, window, random.Random(seed))
    listed = "Each instance belongs to exactly one of these labels: " + ", ".join(LABELS) + "."
    hidden = {r.line(): r.label for r in window.records}
    found = _run_step(f"{listed}\n\n{question}", window.text, hidden.__getitem__)
    expected = str(helpers.PairList([(a, b) for a, b in gold]))
    assert found == expected, question


def test_the_step_lists_pairs_for_questions_worded_otherwise() -> None:
    # Worded unlike the generator, over differently shaped records.
    rng = random.Random(7)
    customers = [str(n) for n in range(100, 112)]
    lines, hidden = [], {}
    for n in range(150):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(90))
        line = f"{day:{DATE_FORMAT}} | Customer: {rng.choice(customers)} | ticket #{n}"
        lines.append(line)
        hidden[line] = rng.choice(SHOP)
    text = "\n".join(lines)
    listed = "Each ticket is one of these labels: refund, delivery, billing, account."
    counts: dict[str, dict[str, int]] = {}
    for line in lines:
        row = counts.setdefault(line.split("Customer: ")[1].split(" ")[0], {})
        row[hidden[line]] = row.get(hidden[line], 0) + 1

    def pairs(ok: Callable[[dict[str, int]], bool]) -> str:
        kept = [c for c in sorted(counts) if ok(counts[c])]
        return str(helpers.PairList(list(itertools.combinations(kept, 2))))

    asked = {
        "Which pairs of customers both filed more than 4 'refund' tickets?": pairs(
            lambda r: r.get("refund", 0) >= 5
        ),
        "List each pair of customers who have no 'account' ticket and at least one "
        "'billing' ticket.": pairs(lambda r: r.get("account", 0) == 0 and r.get("billing", 0) >= 1),
    }
    for question, expected in asked.items():
        assert _run_step(f"{listed} {question}", text, hidden.__getitem__) == expected, question
