"""Kernel helpers that make the common strategies one line: search, map with a sub-LLM, pairs.

Weak models lose runs to a regex that raises on ``None.group()``, to searching for a phrase
worded differently from the text, and to a loop of ``llm_query`` calls; these helpers never
raise on "nothing found" and say what to try instead (issue 14).

- ``search(pattern, context=None, *, regex=False, window=200, max_hits=20)``: numbered
  snippets with their positions over a ``str``, a ``list`` or a ``dict`` of files;
- ``llm_map(items, instruction, *, choices=None, batch_size=10, max_chars=..., model=None)``: one
  answer per item, several items packed into each sub-call, unparsed items retried; with
  ``choices`` every answer is one of them exactly (a label per line, ready to count);
- ``pairs_of(values, others=None)``: every pair of distinct values once, as (smaller, larger),
  printed one ``(a, b)`` per line: the last step of a question about pairs (of users, of
  files) after code has picked the values that qualify;
- ``in_date_range(items, after=None, before=None, *, inclusive=False)``: the items whose
  first written date lies in the range (a question about records "after Jun 26, 2023").
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[\w'-]{3,}")
_ANSWER_LINE = re.compile(r"^\s*(?:\*\*)?\[?(\d{1,4})[\].:)](?:\*\*)?\s*(.*)$")
MAP_MAX_CHARS = 24_000
MAP_ROUNDS = 3
PAIRS_MAX_CANDIDATES = 4_000_000  # value x value combinations pairs_of considers at most


@dataclass(frozen=True)
class Hit:
    """One match: where it is and the text around it."""

    number: int
    source: str | int | None  # file name (dict context), item index (list), None (text)
    position: int  # character offset of the match in its text
    line: int  # 1-based line of the match in its text
    match: str
    text: str  # the match with ``window`` characters either side

    def __str__(self) -> str:
        where = {str: f"file {self.source!r}, ", int: f"item {self.source}, "}.get(
            type(self.source), ""
        )
        return f"[{self.number}] {where}char {self.position:,}, line {self.line}:\n{self.text}"


class SearchResult(list[Hit]):
    """The hits of :func:`search` (a list); prints as numbered snippets or says what to try."""

    def __init__(self, hits: list[Hit], message: str) -> None:
        super().__init__(hits)
        self.message = message

    def __str__(self) -> str:
        body = "\n---\n".join(str(hit) for hit in self)
        return f"{self.message}\n{body}" if body else self.message

    __repr__ = __str__


def _texts(context: Any) -> Iterator[tuple[str | int | None, str]]:
    """(source, text) pairs of a context: a str, a list/tuple of items or a dict of files."""
    if context is None:
        return
    if isinstance(context, str):
        yield None, context
    elif isinstance(context, dict):
        for key, value in context.items():
            yield str(key), value if isinstance(value, str) else _as_text(value)
    elif isinstance(context, list | tuple):
        for index, item in enumerate(context):
            yield index, item if isinstance(item, str) else _as_text(item)
    else:
        yield None, _as_text(context)


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _compile(pattern: str, regex: bool) -> re.Pattern[str]:
    return re.compile(pattern if regex else re.escape(pattern), re.IGNORECASE)


# Inflections a word of a question may carry that the text's word lacks ("finds" for "Find",
# "replies" for "reply"): (suffix, replacement), tried when a search finds nothing as written.
_SUFFIXES = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ing", ""))
# Occurrences of one word per text considered when placing words near each other.
_MAX_OCCURRENCES = 20_000


def _forms(word: str) -> list[str]:
    """``word`` and its stems, longest first: "finds" -> ["finds", "find"]."""
    forms = {word}
    lower = word.lower()
    for suffix, replacement in _SUFFIXES:  # the first that fits: "replies" -> "reply" only
        if lower.endswith(suffix) and not lower.endswith("ss"):
            stem = word[: len(word) - len(suffix)] + replacement
            if len(stem) >= 3:
                forms.add(stem)
            break
    if lower.endswith("y") and len(word) > 3:
        forms.add(word[:-1] + "ies")
    return sorted(forms, key=lambda form: (-len(form), form))


def _word_pattern(word: str) -> re.Pattern[str]:
    """A case-insensitive pattern matching ``word`` or one of its stems."""
    return re.compile("|".join(re.escape(form) for form in _forms(word)), re.IGNORECASE)


def _occurrences(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    spans = []
    for found in pattern.finditer(text):
        spans.append((found.start(), found.end()))
        if len(spans) >= _MAX_OCCURRENCES:
            break
    return spans


def _all_words_near(text: str, words: list[str], window: int) -> list[tuple[int, int, int]]:
    """(rank, start, end) of places where every word (or its stem) occurs within ``window``
    characters of the rarest one, best first (lowest rank), overlapping places dropped.

    Anchoring on the rarest word keeps the work small and any word order works. The rank is
    how far the other words are from the phrase's first word, summed: the words used
    together (a definition's name and docstring, one sentence) come before words that merely
    share a paragraph, and "def parse date" finds ``def parse_date`` before a ``def`` that
    sits below an import of it.
    """
    found = [_occurrences(text, _word_pattern(word)) for word in words]
    if not all(found):
        return []
    anchor = min(range(len(found)), key=lambda i: len(found[i]))
    starts = [[start for start, _ in spans] for spans in found]
    places = []
    for a_start, a_end in found[anchor]:
        chosen = [(a_start, a_end)] * len(found)
        for i, spans in enumerate(found):
            if i == anchor:
                continue
            k = bisect.bisect_left(starts[i], a_start)
            near = [spans[j] for j in (k - 1, k) if 0 <= j < len(spans)]
            best = min(near, key=lambda span: abs(span[0] - a_start))
            if abs(best[0] - a_start) > window:
                break
            chosen[i] = best
        else:
            first = chosen[0][0]
            rank = sum(abs(start - first) for start, _ in chosen)
            places.append((rank, min(s for s, _ in chosen), max(e for _, e in chosen)))
    places.sort()
    kept: list[tuple[int, int, int]] = []
    for place in places:
        if all(place[2] <= other[1] or place[1] >= other[2] for other in kept):
            kept.append(place)
    return kept


def search(
    pattern: str,
    context: Any = None,
    *,
    regex: bool = False,
    window: int = 200,
    max_hits: int = 20,
    _default: Callable[[], Any] | None = None,
) -> SearchResult:
    """Find ``pattern`` in ``context`` (default: the task's ``context``); never raises on no match.

    Case-insensitive; ``regex=True`` treats ``pattern`` as a regular expression. Returns a
    list of :class:`Hit` (number, source, position, line, match, text with ``window``
    characters either side), at most ``max_hits``; print it to see numbered snippets. When a
    phrase is not found word for word, places where all its words (or their stems: "finds"
    also matches "Find") occur within ``window`` characters are returned instead, tightest
    first; in a list or a dict of files with no such place, the items holding all the words.
    A single word not found as written is searched by its stem. The message says which.
    """
    if context is None and _default is not None:
        context = _default()
    if not isinstance(pattern, str) or not pattern:
        return SearchResult(
            [], "search: give the pattern as a non-empty string, e.g. search('magic number')"
        )
    try:
        compiled = _compile(pattern, regex)
    except re.error as exc:
        return SearchResult(
            [], f"search: {pattern!r} is not a valid regex ({exc}); try regex=False for plain text"
        )
    window, max_hits = max(0, int(window)), max(1, int(max_hits))
    spans = [
        (src, text, m.start(), m.end())
        for src, text in _texts(context)
        for m in compiled.finditer(text)
    ]
    note = ""
    words = _WORD.findall(pattern) if not regex else []
    if not spans and len(words) > 1:
        spans, note = _near_or_together(context, words, window)
    elif not spans and len(words) == 1 and len(_forms(words[0])) > 1:
        stems = _word_pattern(words[0])
        spans = [
            (src, text, m.start(), m.end())
            for src, text in _texts(context)
            for m in stems.finditer(text)
        ]
        listed = " or ".join(repr(form) for form in _forms(words[0]) if form != words[0])
        note = f" (not found as written; these match {listed}, another form of the word)"
    hits = [
        Hit(
            number,
            src,
            start,
            text.count("\n", 0, start) + 1,
            text[start:end],
            text[max(0, start - window) : end + window],
        )
        for number, (src, text, start, end) in enumerate(spans[:max_hits], start=1)
    ]
    if not hits:
        return SearchResult([], _no_match_advice(pattern, regex, words, context))
    shown = f"{len(hits)} of {len(spans)}" if len(spans) > len(hits) else f"{len(hits)}"
    plural = "s" if len(spans) > 1 else ""
    return SearchResult(hits, f"search({pattern!r}): {shown} hit{plural}{note}")


def _near_or_together(
    context: Any, words: list[str], window: int
) -> tuple[list[tuple[str | int | None, str, int, int]], str]:
    """The fallback for a phrase not found word for word: places where all its words occur
    close together, tightest first; else, in a list or dict, the items holding all of them."""
    listed = ", ".join(map(repr, words))
    near = sorted(
        (
            (rank, order, src, text, lo, hi)
            for order, (src, text) in enumerate(_texts(context))
            for rank, lo, hi in _all_words_near(text, words, window)
        ),
        key=lambda place: (place[0], place[1], place[4]),  # never compares the texts
    )
    if near:
        note = (
            f" (not found word for word; places where {listed} or their stems occur within "
            f"{window} chars, tightest first)"
        )
        return [(src, text, lo, hi) for _, _, src, text, lo, hi in near], note
    if isinstance(context, str) or not isinstance(context, dict | list | tuple):
        return [], ""
    together = []
    for src, text in _texts(context):
        found = [_occurrences(text, _word_pattern(word)) for word in words]
        if all(found):
            start, end = min(found, key=len)[0]
            together.append((src, text, start, end))
    kind = "files" if isinstance(context, dict) else "items"
    note = (
        f" (not found word for word, and never within {window} chars of each other; the "
        f"{kind} holding all of {listed} or their stems, at the first of the rarest)"
    )
    return together, note if together else ""


def _no_match_advice(pattern: str, regex: bool, words: list[str], context: Any) -> str:
    if context is None:
        return "search: there is no context to search (context is None)"
    tips = []
    if regex:
        tips.append("search with plain words instead of a regex (regex=False)")
    if len(words) > 1:
        longest = max(words, key=len)
        tips.append(f"search for one distinctive word alone, e.g. search({longest!r})")
    else:
        tips.append("search for a shorter part of the word or a synonym")
    tips.append("print a few slices of the context to see how it is worded")
    return f"search({pattern!r}): no match. Try: " + "; ".join(tips) + "."


# --- pairs_of -------------------------------------------------------------------------------


class PairList(list[tuple[Any, Any]]):
    """The pairs of :func:`pairs_of` (a list of tuples); prints one ``(a, b)`` per line, or
    ``none`` when there is no pair, the form a pair question's answer takes."""

    def __str__(self) -> str:
        return "\n".join(f"({a}, {b})" for a, b in self) if self else "none"

    __repr__ = __str__


def _order_key(value: Any) -> tuple[int, int, str]:
    # Ids written as digits order as numbers ("9" before "10": shorter first, then by digit),
    # without int(), which refuses numbers of more than 4,300 digits; anything else as text.
    text = str(value).strip()
    return (0, len(text), text) if text.isdigit() and text.isascii() else (1, 0, text)


def pairs_of(values: Any, others: Any = None) -> PairList:
    """Every pair of distinct values once, each as (smaller, larger), in order.

    With ``others``, each pair takes one value from ``values`` and one from ``others`` (a
    question about one user with one thing and another user with another). Duplicates and a
    value paired with itself are dropped; a dict counts as its keys. Prints one ``(a, b)`` per
    line (``none`` when empty), so ``answer["content"] = str(found)`` is a pair answer.
    """
    if isinstance(values, str) or isinstance(others, str):
        raise TypeError("pairs_of takes lists of values (ids, names), not one string")
    first = list(dict.fromkeys(values))
    second = first if others is None else list(dict.fromkeys(others))
    if len(first) * len(second) > PAIRS_MAX_CANDIDATES:
        # Every value paired with every other is quadratic: a list of all records' ids
        # (instead of the few that qualify) would fill the kernel's memory.
        raise ValueError(
            f"pairs_of: {len(first):,} x {len(second):,} values is too many to pair (at most "
            f"{PAIRS_MAX_CANDIDATES:,}); keep only the values that qualify first"
        )
    found: dict[tuple[Any, Any], None] = {}
    for a in first:
        for b in second:
            if a == b:
                continue
            low, high = sorted((a, b), key=_order_key)
            found[(low, high)] = None
    return PairList(sorted(found, key=lambda pair: (_order_key(pair[0]), _order_key(pair[1]))))


# --- in_date_range -------------------------------------------------------------------------

_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
# The ways records and questions write a day: "Jun 26, 2023", "June 26 2023", "26 June
# 2023", "2023-06-26" (also the date of an ISO timestamp). Slashed dates are left out: 06/07
# is June 7 or July 6 depending on who wrote it, and a wrong guess would silently keep the
# wrong records.
DATE_PATTERN = re.compile(
    rf"\b{_MONTH}\s+{_DAY},?\s+(\d{{4}})\b"
    rf"|\b{_DAY}\s+{_MONTH},?\s+(\d{{4}})\b"
    r"|\b(\d{4})-(\d{2})-(\d{2})(?!\d)",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def record_date(text: Any) -> dt.date | None:
    """The first valid date written in ``text`` ("Jun 26, 2023", "26 June 2023", "2023-06-26"),
    or None; a ``datetime.date`` is returned as it is."""
    if isinstance(text, dt.date):
        return text.date() if isinstance(text, dt.datetime) else text
    for found in DATE_PATTERN.finditer(text if isinstance(text, str) else _as_text(text)):
        g = found.groups()
        if g[0] is not None:
            year, month, day = int(g[2]), _MONTHS.index(g[0][:3].lower()) + 1, int(g[1])
        elif g[3] is not None:
            year, month, day = int(g[5]), _MONTHS.index(g[4][:3].lower()) + 1, int(g[3])
        else:
            year, month, day = int(g[6]), int(g[7]), int(g[8])
        try:
            return dt.date(year, month, day)
        except ValueError:  # "Feb 30, 2023": not a day; a later date in the text may be one
            continue
    return None


def _bound(value: Any, name: str) -> dt.date | None:
    if value is None:
        return None
    day = record_date(value)
    if day is None:
        raise ValueError(
            f"in_date_range: {name}={value!r} is not a date; write it like 'Jun 26, 2023' or "
            "'2023-06-26'"
        )
    return day


def in_date_range(
    items: Any, after: Any = None, before: Any = None, *, inclusive: bool = False
) -> list[Any]:
    """The items whose first written date lies after ``after`` and before ``before``.

    ``after``/``before`` are dates or text holding one ("Jun 26, 2023"); the days themselves
    are left out unless ``inclusive`` (a question's "after Jun 26, 2023 (that day not
    included)" is ``in_date_range(items, after='Jun 26, 2023')``). Items without a date are
    left out.
    """
    if isinstance(items, str | dict):
        raise TypeError(
            "in_date_range takes a list of records (e.g. the non-empty lines of context), not a "
            f"{type(items).__name__}"
        )
    low, high = _bound(after, "after"), _bound(before, "before")
    if low is None and high is None:
        raise ValueError("in_date_range: give after=, before= or both (e.g. after='Jun 26, 2023')")

    def keep(value: Any) -> bool:
        day = record_date(value)
        if day is None:
            return False
        if inclusive:
            return (low is None or day >= low) and (high is None or day <= high)
        return (low is None or day > low) and (high is None or day < high)

    return [item for item in items if keep(item)]


# --- llm_map --------------------------------------------------------------------------------


def _pack(indices: list[int], items: list[str], batch_size: int, max_chars: int) -> list[list[int]]:
    """Group item indices into packs of at most ``batch_size`` items and ``max_chars``."""
    packs: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index in indices:
        length = len(items[index])
        if current and (len(current) >= batch_size or size + length > max_chars):
            packs.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        packs.append(current)
    return packs


def _choice_key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def match_choice(answer: str, choices: Sequence[str]) -> str | None:
    """The one choice ``answer`` names, spelled as in ``choices``; None when it names none or
    several.

    Small models wrap a label in words ("Label: Location.", "**entity**") or shorten it
    ("description" or "abstract concept" for "description and abstract concept"); all of
    these count, an answer that fits two choices does not.
    """
    said = _choice_key(answer)
    if not said:
        return None
    keys = {_choice_key(c): c for c in choices}
    if said in keys:
        return keys[said]
    padded = f" {said} "
    named = [k for k in keys if k and f" {k} " in padded]
    # A label inside a longer named one ("being" in "human being") is not a second answer.
    named = [k for k in named if not any(k != other and k in other for other in named)]
    if len(named) == 1:
        return keys[named[0]]
    if named:
        return None  # "location or entity": ask again rather than pick one
    # Part of one label, any part: the 1.5B model answered "abstract concept" for
    # "description and abstract concept" in 1 of 3 OOLONG-Pairs packs, each asked again.
    # A short word ("and") tells nothing.
    inside = [k for k in keys if f" {said} " in f" {k} "]
    return keys[inside[0]] if len(inside) == 1 and len(said) >= 4 else None


def _packed_prompt(instruction: str, texts: list[str]) -> str:
    if len(texts) == 1:
        return f"{instruction}\n\nText:\n{texts[0]}\n\nReply with the answer only."
    numbered = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(texts, start=1))
    return (
        f"{instruction}\n\nDo this for each of the {len(texts)} numbered items below, separately. "
        f"Reply with exactly {len(texts)} lines, one per item, in order, each starting with the "
        f"item's number in brackets, like:\n[1] <answer for item 1>\n[2] <answer for item 2>\n\n"
        f"Items:\n{numbered}"
    )


def parse_numbered(reply: str, count: int) -> dict[int, str]:
    """Per-item answers from a reply of ``[n] answer`` lines (1-based; continuation lines join)."""
    answers: dict[int, str] = {}
    current: int | None = None
    for line in reply.splitlines():
        found = _ANSWER_LINE.match(line)
        if found and 1 <= int(found.group(1)) <= count:
            current = int(found.group(1))
            answers[current] = found.group(2).strip()
        elif current is not None and line.strip():
            answers[current] = f"{answers[current]}\n{line.strip()}".strip()
    return {n: a for n, a in answers.items() if a}


def llm_map(
    items: Any,
    instruction: str,
    *,
    choices: Sequence[str] | None = None,
    batch_size: int = 10,
    max_chars: int = MAP_MAX_CHARS,
    model: str | None = None,
    _batch: Callable[..., list[str]] | None = None,
) -> Any:
    """Apply ``instruction`` to every item with sub-LLM calls; one answer per item, in order.

    Packs up to ``batch_size`` items (and about ``max_chars`` characters) into each sub-call,
    runs the calls in parallel with ``llm_batch``, reads the per-item answers back from a
    numbered reply, and retries only the items it could not read (in smaller packs, finally
    one per call). ``items`` is a list (returns a list) or a dict (returns a dict with the
    same keys); an item that still failed is a string starting with ``"[ERROR]"``.

    ``choices`` (a list of labels) asks for exactly one of them per item: an answer counts
    only when it names one choice (see :func:`match_choice`) and is returned spelled as in
    ``choices``, so the results can be counted; other answers are asked again.
    """
    if _batch is None:
        from rlm_runtime.bridge_client import llm_batch as _batch
    if not isinstance(instruction, str) or not instruction.strip():
        raise TypeError("llm_map(items, instruction): instruction must be a non-empty string")
    if choices is not None:
        if isinstance(choices, str) or not all(isinstance(c, str) and c.strip() for c in choices):
            raise TypeError("llm_map(..., choices=[...]): choices must be a list of labels")
        choices = list(dict.fromkeys(choices))
        if len(choices) < 2:
            raise TypeError("llm_map(..., choices=[...]): give at least two different labels")
        instruction = (
            f"{instruction.rstrip()}\nAnswer with exactly one of these labels, as written: "
            + "; ".join(choices)
        )
    if isinstance(items, str | bytes):
        # Mapping over a string's characters is never what was meant (seen with a 1.5B root:
        # llm_map(line, ...) once per line, one sub-call per character).
        raise TypeError(
            "llm_map(items, instruction): items is one string; pass a list of pieces, e.g. "
            "llm_map([line for line in context.split('\\n') if line.strip()], ...)"
        )
    keys = list(items) if isinstance(items, dict) else None
    values = list(items.values()) if isinstance(items, dict) else list(items)
    texts = [v if isinstance(v, str) else _as_text(v) for v in values]
    answers: list[str | None] = [None] * len(texts)
    errors: dict[int, str] = {}
    unmatched: dict[int, str] = {}  # the last answer that named no choice, per item
    pending = list(range(len(texts)))
    size = max(1, int(batch_size))
    for round_ in range(MAP_ROUNDS):
        if not pending:
            break
        # The last round sends one item per call: its whole reply is the answer.
        per_call = 1 if round_ == MAP_ROUNDS - 1 else max(1, size // (2**round_))
        packs = _pack(pending, texts, per_call, max_chars)
        replies = _batch(
            [_packed_prompt(instruction, [texts[i] for i in p]) for p in packs], model=model
        )
        for pack, reply in zip(packs, replies, strict=True):
            if reply.startswith("[ERROR]"):
                errors.update((i, reply) for i in pack)
                continue
            if len(pack) == 1 and not parse_numbered(reply, 1):
                parsed = {1: reply.strip()}
            else:
                parsed = parse_numbered(reply, len(pack))
            for n, index in enumerate(pack, start=1):
                if n not in parsed:
                    continue
                if choices is None:
                    answers[index] = parsed[n]
                elif (label := match_choice(parsed[n], choices)) is not None:
                    answers[index] = label
                else:
                    unmatched[index] = parsed[n]
        pending = [i for i in pending if answers[i] is None]

    def failure(index: int) -> str:
        if index in errors:
            return errors[index]
        if index in unmatched:
            return f"[ERROR] the answer {unmatched[index][:80]!r} is none of the choices"
        return "[ERROR] no answer could be read for this item"

    result = [a if a is not None else failure(i) for i, a in enumerate(answers)]
    return dict(zip(keys, result, strict=True)) if keys is not None else result


def make_helpers(
    get_context: Callable[[], Any], bridge: Any = None
) -> dict[str, Callable[..., Any]]:
    """The helpers as the kernel namespace gets them, ``search`` bound to the task's context.

    ``bridge`` has the sub-call functions (``llm_batch``, ``rlm_query``): the runtime's
    :mod:`rlm_runtime.bridge_client` when None; the orchestrator's in-process fake passes its own.
    """
    if bridge is None:
        try:
            from rlm_runtime import bridge_client as bridge
        except ImportError:  # pragma: no cover - the image always ships it
            bridge = None
    batch = bridge.llm_batch if bridge is not None else None

    def search_(
        pattern: str,
        context: Any = None,
        *,
        regex: bool = False,
        window: int = 200,
        max_hits: int = 20,
    ) -> SearchResult:
        return search(
            pattern, context, regex=regex, window=window, max_hits=max_hits, _default=get_context
        )

    search_.__doc__ = search.__doc__
    search_.__name__ = "search"

    def llm_map_(
        items: Any,
        instruction: str,
        *,
        choices: Sequence[str] | None = None,
        batch_size: int = 10,
        max_chars: int = MAP_MAX_CHARS,
        model: str | None = None,
    ) -> Any:
        return llm_map(
            items,
            instruction,
            choices=choices,
            batch_size=batch_size,
            max_chars=max_chars,
            model=model,
            _batch=batch,
        )

    llm_map_.__doc__ = llm_map.__doc__
    llm_map_.__name__ = "llm_map"
    names = {
        "search": search_,
        "llm_map": llm_map_,
        "pairs_of": pairs_of,
        "in_date_range": in_date_range,
    }
    return {**names, **_package_names(bridge)} if bridge is not None else names


def _package_names(bridge: Any) -> dict[str, Callable[..., Any]]:
    """The names the official ``rlms`` package's REPL uses, which its trained models call."""

    def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
        """Same as ``llm_batch``: many ``llm_query`` calls in parallel, answers in order."""
        return bridge.llm_batch(prompts, model=model)  # type: ignore[no-any-return]

    def rlm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
        """``rlm_query`` for each prompt, one after another (``model`` is ignored)."""
        return [bridge.rlm_query(prompt) for prompt in prompts]

    return {"llm_query_batched": llm_query_batched, "rlm_query_batched": rlm_query_batched}
