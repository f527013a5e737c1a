"""The haystack demo: find one hidden fact in a long generated text with the local model.

:func:`make_haystack` builds seeded filler prose with one secret code hidden at a random
sentence boundary; :func:`run_demo` asks the full engine (embedded local model as root and
sub model, code running in the sandbox) for the code and reports whether it was found.
"""

from __future__ import annotations

import random
import re
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SUBJECTS = (
    "The harbour master",
    "A travelling merchant",
    "The old librarian",
    "Our neighbour",
    "The village baker",
    "A quiet student",
    "The ship's cook",
    "The gardener",
    "A retired teacher",
    "The night watchman",
    "The young painter",
    "A local farmer",
)
_VERBS = (
    "walked along",
    "wrote a letter about",
    "complained about",
    "painted a picture of",
    "told a long story about",
    "dreamed about",
    "spent the morning near",
    "asked questions about",
    "sang a song about",
    "forgot everything about",
)
_OBJECTS = (
    "the northern lighthouse",
    "a field of sunflowers",
    "the river after the storm",
    "the crowded market square",
    "an abandoned windmill",
    "the bakery on the corner",
    "a flock of grey geese",
    "the bridge over the canal",
    "the autumn fair",
    "the little chapel on the hill",
    "a basket of ripe apples",
    "the fishing boats in the bay",
)
_TAILS = (
    "while the bells were ringing.",
    "before the rain started.",
    "and nobody seemed to mind.",
    "as the sun went down.",
    "for the third time this week.",
    "without saying a word to anyone.",
    "although it was a Sunday.",
    "and then went home for supper.",
    "in the middle of the afternoon.",
    "while the wind grew colder.",
)

QUESTION = "What is the secret access code mentioned somewhere in the text?"


@dataclass(frozen=True)
class Haystack:
    """A generated long text with one needle."""

    text: str
    secret: str
    question: str
    position: float  # where the needle sits, as a fraction of the text


def _secret(rng: random.Random) -> str:
    letters = "".join(rng.choices(string.ascii_uppercase, k=3))
    return f"{letters}-{rng.randint(1000, 9999)}-{rng.choice(string.ascii_uppercase)}"


def make_haystack(n_chars: int = 30_000, seed: int = 0) -> Haystack:
    """Seeded filler prose of about ``n_chars`` characters with one secret code hidden in it."""
    if n_chars < 500:
        raise ValueError("a haystack needs at least 500 characters")
    rng = random.Random(seed)
    secret = _secret(rng)
    needle = f"Remember this: the secret access code is {secret}."
    sentences: list[str] = []
    size = 0
    while size < n_chars - len(needle):
        sentence = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_TAILS)}"
        )
        sentences.append(sentence)
        size += len(sentence) + 1
    # Keep the needle away from the very start and end, where a glance would find it.
    index = rng.randint(len(sentences) // 10, len(sentences) - len(sentences) // 10)
    sentences.insert(index, needle)
    paragraphs = [" ".join(sentences[i : i + 6]) for i in range(0, len(sentences), 6)]
    text = "\n\n".join(paragraphs)
    return Haystack(
        text=text,
        secret=secret,
        question=QUESTION,
        position=text.index(needle) / len(text),
    )


def is_correct(answer: str, secret: str) -> bool:
    """True if ``answer`` contains the secret code (case and spacing ignored)."""

    def squash(s: str) -> str:
        return re.sub(r"[^A-Z0-9]", "", s.upper())

    return squash(secret) in squash(answer)


def _progress_printer(stream: Any) -> Callable[[dict[str, Any]], None]:
    """Prints one short line per turn, cell and sub-call, so a slow CPU run shows life."""

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("type")
        t = f"[{event.get('t', 0):6.1f}s]"
        if kind == "turn":
            print(f"{t} turn {event.get('iteration')}: model replied", file=stream, flush=True)
        elif kind == "cell":
            code = " | ".join(str(event.get("code", "")).strip().splitlines())[:100]
            print(f"{t}   ran: {code}", file=stream, flush=True)
        elif kind == "sub_call":
            print(f"{t}   sub-call ({event.get('kind')})", file=stream, flush=True)

    return on_event


async def run_demo(
    n_chars: int = 30_000,
    seed: int = 0,
    *,
    trajectory_path: Path | None = None,
    max_iterations: int = 12,
    verbose: bool = True,
    out: Any = None,
) -> tuple[bool, Any]:
    """Run the haystack task through the engine with the local model; print a report.

    Returns ``(correct, RunResult)``. Progress lines go to stderr when ``verbose``; the
    report goes to ``out`` (default stdout).
    """
    from engine import Engine, EngineConfig, Limits

    out = out or sys.stdout
    hay = make_haystack(n_chars, seed)
    print(
        f"haystack: {len(hay.text):,} characters (seed {seed}), "
        f"one secret code hidden at {hay.position:.0%} of the text",
        file=out,
    )
    print(f"question: {hay.question}", file=out, flush=True)
    config = EngineConfig(
        model=None,
        limits=Limits(max_iterations=max_iterations),
        trajectory_path=trajectory_path,
    )
    on_event = _progress_printer(sys.stderr) if verbose else None
    async with Engine(config) as engine:
        result = await engine.run(hay.question, hay.text, on_event=on_event)
    correct = is_correct(result.answer, hay.secret)
    print(f"answer:     {result.answer.strip()!r}", file=out)
    print(f"expected:   {hay.secret}", file=out)
    print(f"correct:    {'yes' if correct else 'no'}", file=out)
    print(
        f"turns:      {result.iterations} (stop: {result.stop_reason}), "
        f"sub-calls: {result.sub_calls}",
        file=out,
    )
    print(
        f"tokens:     {result.usage_total.total_tokens:,}   wall time: {result.wall_s:.1f} s",
        file=out,
    )
    if result.error:
        print(f"error:      {result.error}", file=out)
    print(f"trajectory: {result.trajectory_path}", file=out, flush=True)
    return correct, result
