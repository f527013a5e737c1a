"""Terminal output for progress displays: a rich console on stderr, plain lines elsewhere.

Progress goes to stderr so stdout stays clean for answers, JSON and paths. On a terminal the
displays redraw in place with rich; when stderr is a pipe or a file they print one plain line
per step (no escape codes, no wrapping), which reads well in CI logs and ``2> file``.
"""

from __future__ import annotations

from rich.console import Console


def stderr_console() -> Console:
    """A console on stderr; :func:`live` tells the displays which mode to use.

    Rich's own detection applies, so ``TTY_COMPATIBLE=1`` forces the terminal mode and
    ``TTY_COMPATIBLE=0`` (or ``TERM=dumb``) the plain one.
    """
    return Console(stderr=True)


def live(console: Console) -> bool:
    """True when ``console`` can redraw in place (a terminal that is not ``TERM=dumb``)."""
    return console.is_interactive


def print_line(console: Console, text: str) -> None:
    """Print ``text`` as one literal line: no markup, highlighting or wrapping."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
