"""What a query must be before a run starts: non-empty text that can be written as UTF-8."""

from __future__ import annotations

from engine.errors import ConfigError


def check_query(query: str) -> None:
    """Raise :class:`ConfigError` when ``query`` cannot be asked.

    Python hands bytes that are not UTF-8 (a question read from a pipe, a command-line
    argument) over as lone surrogates, and a JSON string may escape one; such a query would
    fail only later, when the trajectory or the model request is written, with a traceback.
    """
    if not query or not query.strip():
        raise ConfigError("the query is empty; pass the question to answer")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(query[exc.start])
        # U+DC80..U+DCFF: one undecodable byte, as Python's surrogateescape keeps it.
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise ConfigError(
            f"the query is not valid UTF-8 text ({what} at character {exc.start + 1}); "
            "save or type it as UTF-8"
        ) from None
