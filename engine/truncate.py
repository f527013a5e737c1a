"""Shortening text by cutting out its middle, with the one marker the root model ever sees.

Cell output is cut in three places (the kernel's own output cap inside the sandbox, the
orchestrator's bounded buffers, the root loop's ``output_max_chars``), and the model can see
cuts of more than one in one output, so all of them say the same thing: how many characters
were dropped, and where. ``sandbox-image/rlm_runtime/output_cap.py`` (which cannot import the
engine) writes the same text as :func:`marker`.
"""

from __future__ import annotations

import re

#: Finds :func:`marker` in an output (group 1: the count dropped), e.g. for the root loop to
#: notice that the model saw only part of what its cell printed.
MARKER_PATTERN = re.compile(r"\[rlm: output truncated: ([\d,]+) characters dropped\]")


def marker(dropped: int) -> str:
    """The line that stands where ``dropped`` characters were cut out (with its newlines)."""
    return f"\n[rlm: output truncated: {dropped} characters dropped]\n"


def truncate_middle(text: str, max_chars: int) -> str:
    """Return ``text`` cut to at most ``max_chars`` (marker included), keeping head and tail.

    The head usually holds what the code printed first and the tail the error or final result,
    so both are kept (two thirds head); the marker says how many characters were dropped so
    the model knows to print less (or slice) instead of assuming it saw everything.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    # The marker's length depends on the count it shows: size it for the largest count.
    keep = max(max_chars - len(marker(len(text))), 0)
    head = keep * 2 // 3
    tail = keep - head
    return (
        text[:head] + marker(len(text) - head - tail) + (text[len(text) - tail :] if tail else "")
    )
