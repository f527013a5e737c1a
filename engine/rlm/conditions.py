"""What a question asks of each value's label counts, read from its words: "at least 3
'refund' tickets", "no 'bug' report", "one user ... 'entity' and the other ... 'location'".

After the labelling step has counted the labels per value of a field (``per_field``: user ->
{label: count}), a question about values (or pairs of values) is a test on those counts. A
weak root rarely writes that test (seen on OOLONG-Pairs with the 1.5B root: it paired every
user with one such record for "at least 3", took "at least 2 instances" for "2 users", and
paired users within each label for "one ... the other ..."); the engine's advice writes it
from the question, marked as the question's reading so the root can change it.

Only what the words say plainly is read: a count word right before the option ("at least 3",
"at most 2", "exactly one", "more than", "fewer than", "N or more"), a negation in the same
clause ("no", "neither", "none", "not any", "without"), options joined by "or", and "one ...
the other ..." for pairs. Anything else is "at least one", the reading of "has a 'bug'".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUMBER = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten)"
# (pattern, comparison, offset added to the number): "more than 2" is ">= 3".
_COUNT_WORDS: tuple[tuple[re.Pattern[str], str, int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), op, offset)
    for pattern, op, offset in (
        (rf"\b(?:at least|no fewer than|no less than|minimum of)\s+{_NUMBER}\b", ">=", 0),
        (rf"\b{_NUMBER}\s+or\s+more\b", ">=", 0),
        (rf"\b(?:more than|over)\s+{_NUMBER}\b", ">=", 1),
        (rf"\b(?:at most|no more than|maximum of)\s+{_NUMBER}\b", "<=", 0),
        (rf"\b{_NUMBER}\s+or\s+(?:fewer|less)\b", "<=", 0),
        (rf"\b(?:fewer than|less than)\s+{_NUMBER}\b", "<=", -1),
        (rf"\bexactly\s+{_NUMBER}\b", "==", 0),
    )
)
_NONE_WORDS = re.compile(
    r"\b(?:no|neither|nor|none|not\s+(?:have\s+)?any|without|zero|never)\b", re.IGNORECASE
)
# What ends the clause an option belongs to, looking back from it.
_CLAUSE_START = re.compile(r"[,;:.]|\b(?:and|but|while|whereas|where|who|whose|that)\b", re.I)
# Two options with only "or" between them ("'refund' or a 'billing' ticket") are one test.
_OR_BETWEEN = re.compile(
    r"^\W*or\s+(?:(?:a|an|the|any|one)\s+)?(?:(?:with\s+)?(?:the\s+)?labels?\s+)?\W*$",
    re.IGNORECASE,
)
# "one <user> ... the other ...": the options after "the other" are the second value's. A
# "one" that is a count ("at least one instance") is not the first of the two.
_ONE = re.compile(r"(?<!least )(?<!most )(?<!exactly )(?<!than )\bone\b", re.IGNORECASE)
_OTHER = re.compile(r"\bthe other\b", re.IGNORECASE)


@dataclass(frozen=True)
class CountTest:
    """A test on one value's count of ``label``: ``count <op> n``."""

    label: str
    op: str
    n: int

    def code(self) -> str:
        """The test over a ``per_field`` row bound to ``row``."""
        return f"row.get({self.label!r}, 0) {self.op} {self.n}"


@dataclass(frozen=True)
class ValueTest:
    """Tests a value must pass: every group, and within a group any test ("'a' or 'b'")."""

    groups: tuple[tuple[CountTest, ...], ...]

    def code(self) -> str:
        """A Python condition over ``row`` (``per_field[value]``)."""
        parts = [" or ".join(test.code() for test in group) for group in self.groups]
        if len(parts) == 1:
            return parts[0]
        return " and ".join(f"({part})" if " or " in part else part for part in parts)


@dataclass(frozen=True)
class PairTest:
    """What the two values of a pair must pass: both ``first``; or, when ``other`` is set,
    one ``first`` and the other ``other`` ("one user ... the other user ...")."""

    first: ValueTest
    other: ValueTest | None = None


def _option_pattern(option: str) -> re.Pattern[str]:
    # The option as a whole phrase, any case, quoted or not, also in the plural.
    return re.compile(rf"(?<!\w)['\"]?{re.escape(option)}(?:e?s)?['\"]?(?!\w)", re.IGNORECASE)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBER_WORDS[text.lower()]


def _count_test(option: str, clause: str) -> CountTest:
    """The test the words of ``clause`` (the text from its start up to ``option``) put on
    the count of ``option``; "at least one" when they say nothing."""
    counts = [
        (found.end(), -found.start(), op, _number(found.group(1)) + offset)
        for pattern, op, offset in _COUNT_WORDS
        for found in pattern.finditer(clause)
    ]
    if counts:
        # The count words nearest to the option decide; of two ending there, the longer
        # ("no more than 2", not its "more than 2").
        _, _, op, n = max(counts)
        return CountTest(option, op, max(0, n))
    if _NONE_WORDS.search(clause):
        return CountTest(option, "==", 0)
    return CountTest(option, ">=", 1)


def pair_test(request: str, options: list[str]) -> PairTest | None:
    """The test the sentence ``request`` ("Find all pairs of users where ...") puts on the
    label counts of each value of a pair, over the labels ``options``; None when it names
    none of them."""
    mentions = sorted(
        (found.start(), found.end(), option)
        for option in options
        for found in _option_pattern(option).finditer(request)
    )
    if not mentions:
        return None
    other_at = None
    one = _ONE.search(request)
    if one is not None:
        other = _OTHER.search(request, one.end())
        other_at = other.start() if other is not None else None
    sides: dict[bool, list[list[CountTest]]] = {False: [], True: []}
    previous_end = 0
    for start, end, option in mentions:
        between = request[previous_end:start]
        side = other_at is not None and start > other_at
        groups = sides[side]
        clause_from = max((m.end() for m in _CLAUSE_START.finditer(between)), default=0)
        clause = between[clause_from:]
        if groups and previous_end and _OR_BETWEEN.match(between):
            groups[-1].append(CountTest(option, groups[-1][-1].op, groups[-1][-1].n))
        else:
            groups.append([_count_test(option, clause)])
        previous_end = end
    first = ValueTest(tuple(tuple(group) for group in sides[False]))
    if not sides[True]:
        return PairTest(first)
    if not sides[False]:
        return PairTest(ValueTest(tuple(tuple(group) for group in sides[True])))
    return PairTest(first, ValueTest(tuple(tuple(group) for group in sides[True])))
