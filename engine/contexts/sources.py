"""Reading a context from standard input into a file the preparation can use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from engine.errors import ContextError

_CHUNK = 1 << 20


def read_stdin(stream: BinaryIO, folder: Path, max_bytes: int | None = None) -> Path:
    """Copy ``stream`` to ``folder/stdin`` chunk by chunk (never all in memory); return it.

    Raises :class:`ContextError` when standard input is a terminal, empty, or over
    ``max_bytes``.
    """
    if stream.isatty():
        raise ContextError(
            "--context - reads the context from standard input, but it is a terminal; pipe "
            "or redirect a file into rlm (e.g. `cat notes.txt | rlm run --context - ...`)"
        )
    target = folder / "stdin"
    size = 0
    with open(target, "xb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ContextError(
                    f"standard input is larger than {max_bytes:,} bytes; save it to a file "
                    "and pass the path with --context"
                )
            out.write(chunk)
    if size == 0:
        raise ContextError("standard input was empty; pipe the context into `--context -`")
    os.chmod(target, 0o644)
    return target
