"""OOLONG (trec_coarse): aggregate the hidden labels of many short lines.

Windows follow the OOLONG-synth recipe: lines ``Date: <date> || User: <id> || Instance:
<question>`` from the TREC questions, a random label distribution (Dirichlet(1)) per window,
user ids skewed so 80% of instances come from 20% of users, dates spread over 40 months. The
coarse label of each question is never shown; gold answers are computed from it.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.eval.base import EvalItem, Unit, measure_fn
from engine.eval.scoring import exact_after_colon, numeric_score
from engine.eval.trec import LABELS, Question, load_questions

SPAN_DAYS = 1217  # ~40 months
DATE_FORMAT = "%b %d, %Y"


@dataclass(frozen=True)
class Record:
    """One line of a window; ``label`` is hidden from the model."""

    date: dt.date
    user: str
    question: str
    label: str

    def line(self) -> str:
        return f"Date: {self.date:{DATE_FORMAT}} || User: {self.user} || Instance: {self.question}"


@dataclass(frozen=True)
class Window:
    """A generated context window and the hidden facts behind it."""

    records: tuple[Record, ...]
    text: str
    label_weights: dict[str, float]
    users: tuple[str, ...]
    heavy_users: tuple[str, ...]
    start: dt.date
    end: dt.date

    def meta(self) -> dict[str, Any]:
        """JSON-friendly hidden facts (records as [iso date, user, label])."""
        return {
            "records": [[r.date.isoformat(), r.user, r.label] for r in self.records],
            "label_weights": self.label_weights,
            "heavy_users": list(self.heavy_users),
            "n_users": len(self.users),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def format_date(day: dt.date) -> str:
    """Dates as they appear in windows and questions (``Mar 05, 2021``)."""
    return f"{day:{DATE_FORMAT}}"


def build_window(
    length: int, measure: Callable[[str], int], rng: random.Random, questions: tuple[Question, ...]
) -> Window:
    """Lines added until the next one would pass ``length`` (measured by ``measure``)."""
    raw = [rng.gammavariate(1.0, 1.0) for _ in LABELS]
    weights = {label: w / sum(raw) for label, w in zip(LABELS, raw, strict=True)}
    pools: dict[str, list[Question]] = {label: [] for label in LABELS}
    by_label: dict[str, list[Question]] = {label: [] for label in LABELS}
    for q in questions:
        by_label[q.label].append(q)

    sample_lines = [
        f"Date: Jan 01, 2020 || User: 12345 || Instance: {q.text}"
        for q in rng.sample(questions, 40)
    ]
    avg = sum(measure(s + "\n") for s in sample_lines) / len(sample_lines)
    expected_lines = max(1, int(length / avg))
    n_users = max(4, min(300, expected_lines // 8))
    users = tuple(str(u) for u in rng.sample(range(10_000, 100_000), n_users))
    n_heavy = max(1, round(0.2 * n_users))
    heavy, light = users[:n_heavy], users[n_heavy:] or users[:n_heavy]
    start = dt.date(2019, 1, 1) + dt.timedelta(days=rng.randint(0, 1500))
    end = start + dt.timedelta(days=SPAN_DAYS)

    records: list[Record] = []
    size = 0
    misses = 0
    # When a line does not fit, draw a few more (shorter ones may) so small windows still land
    # within 2% of the target; 40 misses in a row means the window is full.
    while misses < 40:
        label = rng.choices(LABELS, weights=[weights[x] for x in LABELS])[0]
        if not pools[label]:
            pools[label] = list(by_label[label])
            rng.shuffle(pools[label])
        q = pools[label].pop()
        user = rng.choice(heavy) if rng.random() < 0.8 else rng.choice(light)
        day = start + dt.timedelta(days=rng.randint(0, SPAN_DAYS))
        rec = Record(date=day, user=user, question=q.text, label=label)
        cost = measure(rec.line() + "\n")
        if size + cost > length and records:
            misses += 1
            continue
        misses = 0
        records.append(rec)
        size += cost
    records.sort(key=lambda r: r.date)  # a stable sort keeps same-day lines in draw order
    text = "\n".join(r.line() for r in records)
    return Window(tuple(records), text, weights, users, heavy, start, end)


PREAMBLE = (
    "The context is a list of data points, one per line, in the form "
    "'Date: <date> || User: <user id> || Instance: <question>'. Each instance is a "
    "general-knowledge question that belongs to exactly one of these labels: "
    + ", ".join(LABELS)
    + ". The labels are not given: infer each one from the question itself."
)

FAMILIES = (
    "most_common",
    "least_common",
    "count_label",
    "compare",
    "user_most",
    "before_date",
    "after_date",
)

FORMATS = {
    "label": "Give your final answer in the form 'Label: <label>'.",
    "number": "Give your final answer in the form 'Answer: <number>'.",
    "comparison": (
        "Give your final answer in the form 'Answer: more common than', "
        "'Answer: less common than' or 'Answer: same frequency as'."
    ),
    "user": "Give your final answer in the form 'User: <user id>'.",
}


def _unique_max(counts: Counter[str], keys: list[str], *, least: bool = False) -> str | None:
    """The single key with the highest (or lowest) count; None on a tie."""
    values = sorted(((counts.get(k, 0), k) for k in keys), reverse=not least)
    if len(values) > 1 and values[0][0] == values[1][0]:
        return None
    return values[0][1]


def make_question(
    family: str, window: Window, rng: random.Random
) -> tuple[str, Any, str, dict[str, Any]]:
    """(question, gold, answer_type, details) for ``family``; ties fall back to count_label."""
    recs = window.records
    label_counts = Counter(r.label for r in recs)
    x, y = rng.sample(LABELS, 2)
    if family in ("most_common", "least_common"):
        least = family == "least_common"
        gold = _unique_max(label_counts, list(LABELS), least=least)
        if gold is not None:
            word = "least" if least else "most"
            return f"Which label is the {word} common in the data?", gold, "label", {}
    elif family == "compare":
        cx, cy = label_counts.get(x, 0), label_counts.get(y, 0)
        relation = (
            "more common than"
            if cx > cy
            else "less common than"
            if cx < cy
            else "same frequency as"
        )
        q = (
            f"Is the label '{x}' more common, less common, or the same frequency as the label "
            f"'{y}' in the data?"
        )
        return q, relation, "comparison", {"labels": [x, y]}
    elif family == "user_most":
        for label in rng.sample(LABELS, len(LABELS)):
            per_user = Counter(r.user for r in recs if r.label == label)
            if not per_user:
                continue
            best = _unique_max(per_user, list(per_user))
            if best is not None:
                q = f"Which user has the most instances with the label '{label}'?"
                return q, best, "user", {"labels": [label]}
    elif family in ("before_date", "after_date"):
        span = (window.end - window.start).days
        cutoff = window.start + dt.timedelta(days=rng.randint(span // 10, span - span // 10))
        if family == "before_date":
            gold_n = sum(1 for r in recs if r.label == x and r.date < cutoff)
            where = f"a date before {format_date(cutoff)} (that day not included)"
        else:
            gold_n = sum(1 for r in recs if r.label == x and r.date > cutoff)
            where = f"a date after {format_date(cutoff)} (that day not included)"
        q = f"How many data points with the label '{x}' have {where}?"
        return q, gold_n, "number", {"labels": [x], "cutoff": cutoff.isoformat()}
    gold_n = label_counts.get(x, 0)
    q = f"How many data points should be classified as label '{x}'?"
    return q, gold_n, "number", {"labels": [x], "fallback_from": family}


#: A question about one window: its text (with the answer format), the gold answer, metadata.
WindowQuestion = tuple[str, Any, dict[str, Any]]


def window_items(
    bench: str,
    length: int,
    n: int,
    seed: int,
    unit: Unit,
    ask: Callable[[int, Window, random.Random], WindowQuestion],
) -> list[EvalItem]:
    """``n`` items of ``bench``, each a fresh window of ``length`` units and ``ask``'s question.

    Shared by OOLONG and OOLONG-Pairs: item ``i``'s window and question come from one RNG
    seeded by the benchmark, length, unit, seed and ``i``, so an item never depends on ``n``.
    """
    questions = load_questions()
    measure = measure_fn(unit)
    out = []
    for i in range(n):
        rng = random.Random(f"{bench}|{length}|{unit}|{seed}|{i}")
        window = build_window(length, measure, rng, questions)
        question, gold, details = ask(i, window, rng)
        meta = {**details, **window.meta(), "context_size": measure(window.text)}
        query = f"{PREAMBLE}\n\n{question}"
        out.append(EvalItem(bench, length, unit, seed, i, query, window.text, gold, meta))
    return out


def score_answer(answer_type: str, gold: Any, prediction: str) -> float:
    """OOLONG scoring: numbers 0.75^|error|, other answers exact match after the last ':'."""
    if answer_type == "number":
        return numeric_score(prediction, int(gold))
    return exact_after_colon(prediction, str(gold))


class OOLONG:
    """OOLONG trec_coarse: counting, user and temporal questions over a generated window."""

    name = "oolong"
    description = "OOLONG trec_coarse aggregation (counting, user, temporal questions)"

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """``n`` windows of ``length`` units, each with one question; families rotate."""

        def ask(i: int, window: Window, rng: random.Random) -> WindowQuestion:
            family = FAMILIES[(seed + i) % len(FAMILIES)]
            question, gold, answer_type, details = make_question(family, window, rng)
            meta = {"family": family, "answer_type": answer_type, **details}
            return f"{question} {FORMATS[answer_type]}", gold, meta

        return window_items(self.name, length, n, seed, unit, ask)

    def score(self, item: EvalItem, prediction: str) -> float:
        return score_answer(item.meta["answer_type"], item.gold, prediction)
