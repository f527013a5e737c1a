"""Answers that are part of a listing the run printed, for questions that ask for all of one.

Seen on OOLONG-Pairs with the 1.5B root (issue 14): the kernel printed every qualifying pair,
one per line, and the root typed one of those lines as its answer; asked for "the answer
itself (a value from the output)", a weak model stores one value. :func:`asks_for_many` tells
a question that asks for every item of a kind from one that asks for one value, and
:func:`partial_listing` finds the earlier output whose lines the answer is a part of. Nothing
here depends on the task: any listing (pairs, file names, ids) printed one item per line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Quoted spans ('human being', "none") and placeholders (<label>) are the question's data,
# not its words: "answer 'all'" asks for no listing.
QUOTED_SPAN = re.compile(r"(?<![\w'])'[^'\n]*'(?!\w)|\"[^\"\n]*\"|<[^<>\n]*>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# A word that asks for every item of a kind ("find all pairs", "list every file", "which
# pairs"), unless a preposition puts it in a phrase about where to look ("the most common
# label among all questions", "in all the text"), which asks for one value.
_MANY = re.compile(r"\b(all|every|each|pairs)\b", re.I)
# "list" asked for, not the noun ("the context is a list of data points"): at the start of a
# sentence or clause, or after a word that introduces a verb.
_LIST_VERB = re.compile(
    r"(?:^|[,;:]\s*|\b(?:please|and|then|to|also)\s+)(?:list|enumerate)\b(?!\s+of\b)", re.I
)
_PREPOSITION = frozenset(
    {"among", "of", "in", "across", "from", "over", "for", "to", "by", "with", "at", "on"}
    | {"within", "between", "into", "about", "than", "per", "under", "like"}
)
# A sentence that asks (a request or a question), not one that describes the data ("Each
# line has a user id").
_REQUEST = re.compile(
    r"\b(find|give|return|name|identify|output|report|provide|show|print|write|collect|"
    r"select|which|what|who|whom|where)\b",
    re.I,
)
_WORD = re.compile(r"[^\W_]+")
# Calls that print a variable's items whole, in another form or order.
_WRAPPERS = frozenset({"map", "sorted", "list", "tuple", "set", "str"})


def normal_space(text: str) -> str:
    """``text`` with each run of whitespace one space, and none at its ends."""
    return " ".join(text.split())


def asks_for_many(query: str) -> bool:
    """Whether ``query`` asks for every item of some kind (a listing), not for one value."""
    text = QUOTED_SPAN.sub(" ", query)
    for sentence in _SENTENCE_END.split(text):
        if _LIST_VERB.search(sentence):
            return True
        request = _REQUEST.search(sentence)
        if request is None:
            continue
        for many in _MANY.finditer(sentence, request.end()):
            before = _WORD.findall(sentence[: many.start()])
            if not before or before[-1].lower() not in _PREPOSITION:
                return True
    return False


@dataclass(frozen=True)
class PartialListing:
    """An answer that is ``given`` of the ``total`` lines of one kind an earlier cell printed."""

    code: str  # the cell that printed the listing
    total: int
    given: int
    name: str | None  # the variable that cell printed whole, if it printed one


def line_shape(line: str) -> str:
    """A line with each run of letters or digits written ``w``: the lines of one listing
    ("(12, 345)" and "(7, 8)"; "a/b.py" and "c/d.py") share it."""
    return _WORD.sub("w", normal_space(line))


def partial_listing(answer: str, outputs: Iterable[tuple[str, str]]) -> PartialListing | None:
    """The latest output (of a cell, not the preview) of which ``answer`` is some of the
    lines of one shape but not all; None when there is none.

    Every line of the answer must be a whole line of that output (so a value found inside a
    longer line, a count or a name from a table, is not part of a listing), and the output
    must hold at least one more distinct line of the same shape.
    """
    given = list(dict.fromkeys(normal_space(x) for x in answer.splitlines() if x.strip()))
    shapes = {line_shape(x) for x in given}
    if not given or len(shapes) != 1:
        return None
    (shape,) = shapes
    for code, output in reversed(list(outputs)):
        if not code:
            continue
        lines = dict.fromkeys(normal_space(x) for x in output.splitlines() if x.strip())
        same = [x for x in lines if line_shape(x) == shape]
        if all(x in lines for x in given) and len(same) > len(given):
            return PartialListing(code, len(same), len(given), printed_name(code))
    return None


# A pair as code prints it, on a line of its own: "(12, 345)", "('a.py', 'b.py')"; and as an
# answer may hold one anywhere.
_PAIR_LINE = re.compile(r"^\(\s*[^(),\s][^(),]*,\s*[^(),\s][^(),]*\)$")
_PAIR_IN_TEXT = re.compile(r"\(\s*[^(),\s][^(),]*,\s*[^(),\s][^(),]*\)")
# "pair" or "pairs" as a word of a question (not inside "repairs").
PAIRS_WORD = re.compile(r"(?<!\w)pairs?(?!\w)", re.I)
_ID_WORDS = frozenset({"user", "users", "id", "ids"})


def holds_pair(answer: str) -> bool:
    """Whether ``answer`` writes at least one pair: ``(a, b)`` anywhere, or a line of exactly
    two values ("12 || 345", "User: 7, User: 8"); a list of several ids on one line is none."""
    if _PAIR_IN_TEXT.search(answer):
        return True
    for line in answer.splitlines():
        words = [w for w in _WORD.findall(line) if w.lower() not in _ID_WORDS]
        if len(words) == 2:
            return True
    return False


def asks_for_pairs(query: str) -> bool:
    """Whether ``query`` asks for every pair of some kind ("find all pairs of users")."""
    return asks_for_many(query) and bool(PAIRS_WORD.search(QUOTED_SPAN.sub(" ", query)))


def unpaired_answer(answer: str, outputs: Iterable[tuple[str, str]]) -> PartialListing | None:
    """The latest output (of a cell) that printed pairs one per line, when ``answer`` holds
    no pair at all ("none", a list of ids); None otherwise.

    Seen on OOLONG-Pairs with the 1.5B root: the engine's step printed the question's pairs
    as read, and the root answered the list of users they pair, or resent 'none'.
    """
    if holds_pair(answer):
        return None
    for code, output in reversed(list(outputs)):
        if not code:
            continue
        pairs = {normal_space(x) for x in output.splitlines() if _PAIR_LINE.match(x.strip())}
        if pairs:
            return PartialListing(code, len(pairs), 0, printed_name(code))
    return None


def printed_name(code: str) -> str | None:
    """The variable the last whole-value print of ``code`` shows (``print(found)``,
    ``print('\\n'.join(found))``, ``print(*found, sep='\\n')``); None if there is none."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    # A loop's variable printed in its body is one item: the whole value is what it loops over
    # (``for p in found: print(p)``), or unknown.
    loops: dict[str, str | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.comprehension):
            over = node.iter.id if isinstance(node.iter, ast.Name) else None
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name):
                    loops[target.id] = over if isinstance(node.target, ast.Name) else None
    name: tuple[str, tuple[int, int]] | None = None
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
            and len(node.args) == 1
        ):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Starred):
            arg = arg.value
        elif (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Attribute)
            and arg.func.attr == "join"
            and len(arg.args) == 1
        ):
            arg = arg.args[0]
        if (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Name)
            and arg.func.id in _WRAPPERS
            and arg.args
        ):
            arg = arg.args[-1]  # '\n'.join(map(str, found)), sorted(found)
        # ast.walk is breadth-first: keep the print that comes last in the code.
        printed = arg.id if isinstance(arg, ast.Name) else None
        if printed in loops:
            printed = loops[printed]
        at = (node.lineno, node.col_offset)
        if printed is not None and (name is None or at >= name[1]):
            name = (printed, at)
    return name[0] if name is not None else None
