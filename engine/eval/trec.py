"""The TREC question-classification data (Li & Roth) that OOLONG's trec_coarse split uses."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from engine.data.registry import TREC_TEST, TREC_TRAIN
from engine.errors import DataMissingError
from engine.eval.base import data_file

TREC_FILES = (TREC_TRAIN.path, TREC_TEST.path)

# OOLONG's names for the six coarse labels.
LABEL_NAMES: dict[str, str] = {
    "ABBR": "abbreviation",
    "ENTY": "entity",
    "DESC": "description and abstract concept",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}
LABELS: tuple[str, ...] = tuple(LABEL_NAMES.values())


@dataclass(frozen=True)
class Question:
    """One TREC question with its coarse label (OOLONG name)."""

    text: str
    label: str


def parse_label_line(line: str) -> Question | None:
    """Parse ``COARSE:fine question text`` into a Question (None for blank lines)."""
    line = line.strip()
    if not line:
        return None
    tag, _, text = line.partition(" ")
    coarse = tag.split(":", 1)[0]
    if coarse not in LABEL_NAMES or not text:
        raise DataMissingError(f"unexpected TREC line (want 'COARSE:fine question'): {line!r}")
    return Question(text=text.strip(), label=LABEL_NAMES[coarse])


@functools.cache
def _load(paths: tuple[Path, ...]) -> tuple[Question, ...]:
    out: list[Question] = []
    for path in paths:
        # train_5500.label is Latin-1; TREC_10.label is ASCII, which Latin-1 also reads.
        for line in path.read_text(encoding="latin-1").splitlines():
            q = parse_label_line(line)
            if q is not None:
                out.append(q)
    return tuple(out)


def load_questions() -> tuple[Question, ...]:
    """All TREC questions from the data directory (``rlm data pull oolong``), in file order."""
    paths = tuple(data_file(f, bench="oolong") for f in TREC_FILES)
    return _load(paths)
