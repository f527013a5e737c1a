"""OOLONG-Pairs: questions whose answer is the set of user-id pairs meeting a condition.

Same windows as :mod:`engine.eval.oolong`; each condition constrains both users' (hidden)
labels, some only counting instances after a date. Scored by F1 over the pair set.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from engine.eval.base import EvalItem, Unit
from engine.eval.oolong import Window, WindowQuestion, format_date, window_items
from engine.eval.scoring import pair_f1
from engine.eval.trec import LABELS

MAX_PAIRS = 300  # prefer conditions whose answer stays listable
TEMPLATES = ("both_have", "one_each", "both_at_least", "both_have_without", "both_after")

ANSWER_FORMAT = (
    "List every qualifying pair of user ids on its own line as (smaller id, larger id), "
    "each pair once. If no pair qualifies, answer 'none'."
)

Profile = dict[str, dict[str, int]]  # user -> label -> count


def profiles(window: Window, after: dt.date | None = None) -> Profile:
    """Per-user label counts, optionally only for instances dated after ``after``."""
    out: Profile = defaultdict(lambda: defaultdict(int))
    for r in window.records:
        if after is None or r.date > after:
            out[r.user][r.label] += 1
    return out


def _pairs(users: list[str], ok: Callable[[str, str], bool]) -> list[list[str]]:
    found = []
    for a, b in itertools.combinations(sorted(users), 2):
        if ok(a, b):
            found.append([a, b])
    return found


def make_pairs_question(
    template: str, window: Window, rng: random.Random
) -> tuple[str, list[list[str]], dict[str, Any]]:
    """(question, gold pairs sorted, details) for one template with random labels."""
    x, y = rng.sample(LABELS, 2)
    users = sorted(window.users)
    if template == "both_after":
        span = (window.end - window.start).days
        cutoff = window.start + dt.timedelta(days=rng.randint(span // 3, span - span // 6))
        prof = profiles(window, after=cutoff)
        gold = _pairs(users, lambda a, b: prof[a][x] >= 1 and prof[b][x] >= 1)
        q = (
            f"Find all pairs of users where both users have at least one instance with the "
            f"label '{x}' dated after {format_date(cutoff)} (that day not included)."
        )
        return q, gold, {"labels": [x], "cutoff": cutoff.isoformat()}
    prof = profiles(window)
    if template == "one_each":
        gold = _pairs(
            users,
            lambda a, b: (
                (prof[a][x] >= 1 and prof[b][y] >= 1) or (prof[a][y] >= 1 and prof[b][x] >= 1)
            ),
        )
        q = (
            f"Find all pairs of users where one user has at least one instance with the label "
            f"'{x}' and the other user has at least one instance with the label '{y}'."
        )
        return q, gold, {"labels": [x, y]}
    if template == "both_at_least":
        k = rng.randint(2, 4)
        gold = _pairs(users, lambda a, b: prof[a][x] >= k and prof[b][x] >= k)
        q = (
            f"Find all pairs of users where both users have at least {k} instances with the "
            f"label '{x}'."
        )
        return q, gold, {"labels": [x], "k": k}
    if template == "both_have_without":
        gold = _pairs(
            users,
            lambda a, b: all(prof[u][x] >= 1 and prof[u][y] == 0 for u in (a, b)),
        )
        q = (
            f"Find all pairs of users where both users have at least one instance with the "
            f"label '{x}' and neither user has any instance with the label '{y}'."
        )
        return q, gold, {"labels": [x, y]}
    gold = _pairs(users, lambda a, b: prof[a][x] >= 1 and prof[b][x] >= 1)
    q = f"Find all pairs of users where both users have at least one instance with the label '{x}'."
    return q, gold, {"labels": [x]}


class OOLONGPairs:
    """OOLONG-Pairs: user-pair aggregation over trec_coarse windows, scored by F1."""

    name = "oolong-pairs"
    description = "OOLONG-Pairs: sets of user pairs meeting label conditions (F1)"

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """``n`` windows with one pair question each; conditions with 1..300 pairs preferred."""

        def ask(i: int, window: Window, rng: random.Random) -> WindowQuestion:
            first = TEMPLATES[(seed + i) % len(TEMPLATES)]
            best: tuple[str, list[list[str]], dict[str, Any], str] | None = None
            for attempt in range(30):
                template = first if attempt < 10 else rng.choice(TEMPLATES)
                q, gold, details = make_pairs_question(template, window, rng)
                if 1 <= len(gold) <= MAX_PAIRS:
                    best = (q, gold, details, template)
                    break
                if best is None or (gold and (not best[1] or len(gold) < len(best[1]))):
                    best = (q, gold, details, template)
            assert best is not None
            q, gold, details, template = best
            meta = {"family": template, **details, "n_pairs": len(gold)}
            return f"{q} {ANSWER_FORMAT}", gold, meta

        return window_items(self.name, length, n, seed, unit, ask)

    def score(self, item: EvalItem, prediction: str) -> float:
        """F1 between predicted and gold pairs ('none' predicts the empty set)."""
        return pair_f1(prediction, item.gold)
