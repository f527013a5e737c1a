"""Scorers shared by the benchmarks. Each returns a float in [0, 1]."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_INT_RE = re.compile(r"-?\d[\d,]*")


def contains_fraction(prediction: str, golds: Sequence[str]) -> float:
    """Fraction of ``golds`` found in ``prediction``, case-insensitive (RULER's string match)."""
    if not golds:
        return 0.0
    text = prediction.lower()
    return sum(1 for g in golds if g.lower() in text) / len(golds)


def after_last_colon(prediction: str) -> str:
    """The text after the last ':' (the whole text when there is none)."""
    return prediction.rsplit(":", 1)[-1] if ":" in prediction else prediction


def normalize_answer(text: str) -> str:
    """Lower-case, drop markdown/quotes/brackets and outer punctuation, squeeze spaces."""
    text = text.lower().replace("*", "").replace("`", "")
    text = re.sub(r"[\"'\[\]()]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" .,;!")


def parse_int(text: str) -> int | None:
    """First integer in ``text`` (thousands separators allowed), or None."""
    match = _INT_RE.search(text)
    if not match:
        return None
    return int(match.group(0).replace(",", ""))


def numeric_score(prediction: str, gold: int) -> float:
    """OOLONG's numeric score: 0.75 ** |gold - predicted| on the number after the last ':'."""
    value = parse_int(after_last_colon(prediction))
    if value is None:
        # "Answer: 12" may be followed by a sentence with a ':'; fall back to the whole text's
        # last number before giving up.
        numbers = _INT_RE.findall(prediction)
        if not numbers:
            return 0.0
        value = int(numbers[-1].replace(",", ""))
    return 0.75 ** abs(gold - value)


def exact_after_colon(prediction: str, gold: str) -> float:
    """1.0 when the text after the last ':' equals ``gold`` once normalized, else 0.0."""
    return float(normalize_answer(after_last_colon(prediction)) == normalize_answer(gold))


Pair = tuple[str, str]
# One id as models write it: bare (12345), quoted as a Python tuple prints it ('12345'), or
# named the way the records name it (User: 12345, user id 12345). The word is only taken as a
# prefix when a separator follows it, so an id such as "user1" stays whole.
_ID = r"""["']?(?:(?i:user)(?:\s*(?i:id))?(?:\s*[:#]\s*|\s+))?([A-Za-z0-9_-]+)["']?"""
_PAIR_RE = re.compile(r"\(\s*" + _ID + r"\s*,\s*" + _ID + r"\s*\)")
# Between the two ids of a pair on its own line: a comma, a semicolon or "&"; or, for ids that
# hold a digit (so prose such as "no pairs" is no pair), "and", "|" or "||" (the records' own
# separator, seen from the 1.5B root on OOLONG-Pairs), "/", "-", or just spaces.
_LINE_PAIR_RE = re.compile(r"^\W*" + _ID + r"\s*([,;&]|[|/-]+|(?i:and)\b|\s)\s*" + _ID + r"\W*$")


def canonical_pair(a: str, b: str) -> Pair:
    """A pair as an ordered tuple, so (b, a) and (a, b) compare equal."""
    return (a, b) if a <= b else (b, a)


def parse_pairs(prediction: str) -> set[Pair]:
    """Pairs written ``(a, b)`` anywhere, or one ``a, b`` (``a || b``, ``a and b``, ...) per
    line when none are in brackets."""
    found = {canonical_pair(a, b) for a, b in _PAIR_RE.findall(prediction)}
    if not found:
        for line in prediction.splitlines():
            match = _LINE_PAIR_RE.match(line.strip())
            if match is None:
                continue
            a, separator, b = match.groups()
            if separator.strip() in (",", ";", "&") or all(
                any(c.isdigit() for c in i) for i in (a, b)
            ):
                found.add(canonical_pair(a, b))
    return {p for p in found if p[0] != p[1]}


def pair_f1(prediction: str, gold: Iterable[Sequence[str]]) -> float:
    """F1 between the predicted and gold pair sets (1.0 when both are empty)."""
    gold_set = {canonical_pair(str(a), str(b)) for a, b in gold}
    pred = parse_pairs(prediction)
    if not gold_set and not pred:
        return 1.0
    hits = len(gold_set & pred)
    if hits == 0:
        return 0.0
    precision = hits / len(pred)
    recall = hits / len(gold_set)
    return 2 * precision * recall / (precision + recall)


_CHOICE_PATTERNS = (
    re.compile(r"^\W*([ABCD])\W*$"),
    re.compile(r"(?i:answer)\s*(?i:is)?\s*[:=\-]?\s*\**\s*\(?([ABCD])\b"),
    re.compile(r"\(([ABCD])\)"),
    re.compile(r"(?:^|\s)([ABCD])[.)](?:\s|$)"),
)


def _option_key(text: str) -> str:
    return " ".join(text.strip().strip("`'\".").split()).casefold()


def _mentions(text: str, key: str) -> bool:
    # Whole mentions only: "httpx/_api.py" is not named by "httpx/_api.pyi".
    return re.search(rf"(?<![\w./-]){re.escape(key)}(?![\w/-]|\.\w)", text) is not None


def parse_choice(prediction: str, options: Sequence[str] = ()) -> str | None:
    """The option letter A-D a prediction commits to, or None.

    Tries, in order: a bare letter, "answer (is) X" (last one), "(X)" (last one), "X." / "X)".
    Letters are upper-case only, so the article "a" is not read as option A. With no letter,
    a prediction that states one option's text (``options`` in A-D order) picks that option:
    models often answer with the content ("httpx/_api.py") rather than its label. An answer
    naming several options picks none.
    """
    text = prediction.strip()
    for pattern in _CHOICE_PATTERNS:
        hits = pattern.findall(text)
        if hits:
            return str(hits[-1])
    keys = [_option_key(option) for option in options[:4]]
    said = _option_key(text)
    if not said or not any(keys):
        return None
    exact = [i for i, key in enumerate(keys) if key and key == said]
    named = exact or [i for i, key in enumerate(keys) if key and _mentions(said, key)]
    return "ABCD"[named[0]] if len(named) == 1 else None


def choice_score(prediction: str, gold: str, options: Sequence[str] = ()) -> float:
    """Accuracy on a multiple-choice answer: 1.0 when the chosen option is ``gold``.

    ``options`` (the choices' texts, A-D) let an answer that states an option's text count.
    """
    return float(parse_choice(prediction, options) == gold.upper())
