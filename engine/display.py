"""Terminal output for progress displays: a rich console on stderr, plain lines elsewhere.

Progress goes to stderr so stdout stays clean for answers, JSON and paths. On a terminal the
displays redraw in place with rich; when stderr is a pipe or a file they print one plain line
per step (no escape codes, no wrapping), which reads well in CI logs and ``2> file``.
"""

from __future__ import annotations

import re
from typing import TextIO

from rich.console import Console

# C0 and C1 control characters but tab and newline: ESC starts the sequences that move the
# cursor, recolour, set the window title or (in some terminals) write to the clipboard, and a
# carriage return lets a line overwrite the one before it.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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


def safe_for(stream: TextIO, text: str) -> str:
    """``text`` as it may be written to ``stream``.

    An answer, an error or a variable's type comes from the model and the sandbox, which a
    hostile context can steer: on a terminal its control characters are shown escaped
    (``\\x1b``) rather than obeyed. Into a pipe or a file the text goes unchanged.
    """
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: not a terminal
        terminal = False
    if not terminal:
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
