"""S-NIAH: RULER's single needle in a haystack of Paul Graham essays.

A needle sentence ``One of the special magic numbers for <key> is: <value>.`` is inserted once,
at a sentence boundary at a uniformly drawn depth, into essay text cut (and repeated when
needed) to the target length. Values are 7-digit numbers or UUIDs.
"""

from __future__ import annotations

import functools
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.data.registry import PAUL_GRAHAM_ESSAYS
from engine.errors import DataMissingError
from engine.eval.base import EvalItem, Unit, data_file, measure_fn
from engine.eval.haystack import cut_prefix, repeat_to
from engine.eval.scoring import contains_fraction

ESSAYS_FILE = PAUL_GRAHAM_ESSAYS.path

_ADJECTIVE_TEXT = (
    "amber brave calm dizzy eager fancy gentle hollow icy jolly keen lucky mellow noble odd "
    "proud quiet rapid shiny tidy vivid witty young zesty bitter cosmic dusty fierce gloomy "
    "humble jagged lively misty nimble ornate placid rustic sturdy tender"
)
_NOUN_TEXT = (
    "anchor badger candle dolphin ember falcon glacier harbor island jacket kettle lantern "
    "meadow nectar orchard pebble quarry raven saddle tunnel umbrella violin walnut yarn zephyr "
    "bridge cactus dragon engine forest garden hammer igloo jungle kiosk ladder mirror needle"
)
_ADJECTIVES = tuple(_ADJECTIVE_TEXT.split())
_NOUNS = tuple(_NOUN_TEXT.split())

_BOUNDARY_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


@functools.cache
def _essays(path: Path) -> str:
    try:
        text = json.loads(path.read_text(encoding="utf-8"))["text"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataMissingError(
            f"{path} is not the RULER essay file ({{'text': ...}}): {exc}"
        ) from exc
    return str(text)


def load_essays() -> str:
    """The concatenated Paul Graham essays from the data directory (``rlm data pull sniah``)."""
    return _essays(data_file(ESSAYS_FILE, bench="sniah"))


def sentence_starts(text: str) -> list[int]:
    """Offsets in ``text`` where a sentence starts (after . ! or ? and whitespace)."""
    return [0, *(m.end() for m in _BOUNDARY_RE.finditer(text))]


@dataclass(frozen=True)
class SNIAH:
    """The S-NIAH benchmark; ``value_kind`` picks 7-digit numbers or UUIDs."""

    value_kind: Literal["number", "uuid"] = "number"

    @property
    def name(self) -> str:
        return "sniah" if self.value_kind == "number" else "sniah-uuid"

    @property
    def description(self) -> str:
        return f"RULER single needle (Paul Graham essays haystack, {self.value_kind} values)"

    def items(self, length: int, n: int, seed: int, unit: Unit = "tokens") -> list[EvalItem]:
        """``n`` haystacks of ``length`` units, each with one needle at a uniform depth."""
        essays = load_essays()
        measure = measure_fn(unit)
        return [self._item(essays, measure, length, unit, seed, i) for i in range(n)]

    def _item(
        self,
        essays: str,
        measure: Callable[[str], int],
        length: int,
        unit: Unit,
        seed: int,
        index: int,
    ) -> EvalItem:
        rng = random.Random(f"{self.name}|{length}|{unit}|{seed}|{index}")
        starts = sentence_starts(essays[:200_000])
        start = rng.choice(starts)
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        plural = "numbers" if self.value_kind == "number" else "UUIDs"
        singular = "number" if self.value_kind == "number" else "UUID"
        while True:
            if self.value_kind == "number":
                value = str(rng.randint(1_000_000, 9_999_999))
            else:
                value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if value not in essays:
                break
        needle = f"One of the special magic {plural} for {key} is: {value}."
        min_chars = length * (1 if unit == "chars" else 8) + 10_000
        source = repeat_to(essays, start, min_chars)
        haystack = cut_prefix(source, length - measure(needle + " "), measure)
        depth = rng.random()
        bounds = sentence_starts(haystack)
        target = depth * len(haystack)
        at = min(bounds, key=lambda b: abs(b - target))
        if at == 0:
            context = needle + " " + haystack
        else:
            # Keep the whitespace before the sentence we insert in front of.
            context = haystack[:at] + needle + " " + haystack[at:]
        query = (
            f"What is the special magic {singular} for {key} mentioned in the provided text? "
            f"Answer with the {singular} only."
        )
        return EvalItem(
            bench=self.name,
            length=length,
            unit=unit,
            seed=seed,
            index=index,
            query=query,
            context=context,
            gold=[value],
            meta={
                "key": key,
                "needle": needle,
                "depth": depth,
                "needle_offset": at,
                "context_size": measure(context),
            },
        )

    def score(self, item: EvalItem, prediction: str) -> float:
        """Fraction of gold values found in the prediction, case-insensitive."""
        return contains_fraction(prediction, item.gold)
