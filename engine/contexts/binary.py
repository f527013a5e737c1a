"""Telling text from binary files, the way git does."""

from __future__ import annotations

# git's heuristic (xdiff `buffer_is_binary`): a NUL byte in the first 8,000 bytes. Text in
# any ASCII-compatible encoding has none; images, archives, executables almost always do.
SNIFF_BYTES = 8000


def looks_binary(head: bytes) -> bool:
    """True when ``head`` (the start of a file) holds a NUL byte."""
    return b"\0" in head[:SNIFF_BYTES]
