"""The date range a question puts on records ("after Jun 26, 2023"), read from its words.

Questions over dated records often count or pair only the records of some days ("how many
'entity' questions are dated after Mar 05, 2021", "pairs of users who both have a 'location'
question after Aug 13, 2021"). A weak root tests the date as a string in each line, which
keeps no line (seen on OOLONG-Pairs with the 1.5B root), or forgets the range. The labelling
step (:mod:`engine.rlm.nudges`) keeps only the records in the range with the kernel helper
``in_date_range`` before labelling them, so its counts and tables are the question's.

The kernel parses each record's date (``rlm_runtime.helpers.record_date``); this side only
finds the range in the question and checks that the records carry dates at all, and writes
the days as the question did, which ``in_date_range`` reads back.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# The date forms the kernel's ``record_date`` reads (slashed dates are ambiguous and left out
# there too); tests/test_dates.py checks that both sides read the same days.
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
DATE_TEXT = (
    rf"\b{_MONTH}\s+{_DAY},?\s+\d{{4}}\b"
    rf"|\b{_DAY}\s+{_MONTH},?\s+\d{{4}}\b"
    r"|\b\d{4}-\d{2}-\d{2}(?!\d)"
)
_DATE = re.compile(DATE_TEXT, re.IGNORECASE)
_FORMATS = ("%b %d %Y", "%B %d %Y", "%d %b %Y", "%d %B %Y", "%Y-%m-%d")

# Words that put a bound before a date: (pattern, side, whether the day itself is in).
# Longer phrases first: "on or after" must not be read as "after".
_BOUND_WORDS: tuple[tuple[str, str, bool], ...] = (
    (r"on or after|no earlier than|since|starting(?: on| from)?", "after", True),
    (r"on or before|no later than|until|till|up to|through", "before", True),
    (r"after|later than", "after", False),
    (r"before|earlier than|prior to", "before", False),
)
_BETWEEN = re.compile(
    rf"\b(?:between|from)\s+({DATE_TEXT})\s+(?:and|to|until|till|through)\s+({DATE_TEXT})",
    re.IGNORECASE,
)
_EXCLUDED = re.compile(r"\b(?:not included|excluded|exclusive)\b", re.IGNORECASE)
_INCLUDED = re.compile(r"(?<!not )\b(?:included|inclusive)\b", re.IGNORECASE)
_NEXT_BOUND = re.compile(
    r"\b(?:after|before|since|until|till|through|between|from|later|earlier|prior|on or)\b"
    r"|\d{4}",
    re.IGNORECASE,
)
# Records count as dated when this share of the preview's complete lines hold a date.
DATED_SHARE = 0.8


@dataclass(frozen=True)
class DateRange:
    """The days a question keeps: after ``after`` and/or before ``before``, as the question
    wrote them; the days themselves too when ``inclusive``."""

    after: str | None
    before: str | None
    inclusive: bool

    def code(self, items: str = "items") -> str:
        """The ``in_date_range`` call that keeps these days of ``items``."""
        args = [items]
        if self.after is not None:
            args.append(f"after={self.after!r}")
        if self.before is not None:
            args.append(f"before={self.before!r}")
        if self.inclusive:
            args.append("inclusive=True")
        return f"in_date_range({', '.join(args)})"

    def describe(self) -> str:
        """The range in words: "dated after 'Jun 26, 2023' (that day not included)"."""
        parts = []
        if self.after is not None:
            parts.append(f"after {self.after!r}")
        if self.before is not None:
            parts.append(f"before {self.before!r}")
        days = "those days included" if self.inclusive else "those days not included"
        if len(parts) == 1:
            days = days.replace("those days", "that day")
        return f"dated {' and '.join(parts)} ({days})"


def parse_date(text: str) -> dt.date | None:
    """The day ``text`` writes ("Jun 26, 2023", "26th June 2023", "2023-06-26"), or None."""
    cleaned = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", text.replace(",", " ").replace(".", " "))
    cleaned = " ".join(cleaned.split())
    if re.fullmatch(r"sept\b.*", cleaned, re.IGNORECASE):
        cleaned = "Sep" + cleaned[4:]
    for form in _FORMATS:
        try:
            return dt.datetime.strptime(cleaned, form).date()
        except ValueError:
            continue
    return None


def date_range(query: str) -> DateRange | None:
    """The date range ``query`` keeps records in, or None when it names none or is unclear.

    One bound per side is read ("after X", "on or before Y", "between X and Y"); a question
    naming two dates for one side ("before X ... before Y") compares ranges rather than
    keeping one, and gets None. "(that day not included)" or "(included)" after the date
    overrides what the bound word implies.
    """
    between = _BETWEEN.search(query)
    if between is not None:
        low, high = between.group(1), between.group(2)
        if parse_date(low) is None or parse_date(high) is None:
            return None
        tail = _tail(query, between.end())
        return DateRange(low, high, inclusive=not _EXCLUDED.search(tail))
    found: dict[str, tuple[str, bool]] = {}
    taken: list[tuple[int, int]] = []
    for words, side, inclusive in _BOUND_WORDS:
        pattern = re.compile(rf"\b(?:{words})\s+(?:the\s+)?({DATE_TEXT})", re.IGNORECASE)
        for match in pattern.finditer(query):
            if any(start <= match.start(1) < end for start, end in taken):
                continue  # "on or after X" already read; its "after X" is the same bound
            taken.append((match.start(1), match.end(1)))
            day = match.group(1)
            if parse_date(day) is None or side in found:
                return None
            tail = _tail(query, match.end())
            day_in = (
                False if _EXCLUDED.search(tail) else True if _INCLUDED.search(tail) else inclusive
            )
            found[side] = (day, day_in)
    if not found:
        return None
    if len({inclusive for _, inclusive in found.values()}) > 1:
        return None  # one side with its day, the other without: ``in_date_range`` takes one choice
    after, before = found.get("after"), found.get("before")
    if after and before and parse_date(after[0]) >= parse_date(before[0]):  # type: ignore[operator]
        return None  # "before X or after Y": two ranges, not one
    return DateRange(
        after[0] if after else None,
        before[0] if before else None,
        inclusive=next(iter(found.values()))[1],
    )


def _tail(query: str, end: int) -> str:
    """The words after a date that may say whether its day is in ("(that day not included)"),
    up to the next bound: in "since X and before Y (not included)" the note is Y's alone."""
    tail = query[end : end + 60]
    return _NEXT_BOUND.split(tail, maxsplit=1)[0]


def records_dated(lines: list[str]) -> bool:
    """Whether the records ``lines`` (complete lines of a preview) carry dates: most hold one."""
    if not lines:
        return False
    dated = sum(1 for line in lines if _DATE.search(line))
    return dated >= DATED_SHARE * len(lines)
