"""Reading files a user may have been handed (cassettes, trajectories, TOML configs).

Such a file is untrusted input to the CLI: it may be a device or a FIFO (``/dev/zero`` was
read until memory ran out), bytes that are not UTF-8, JSON nested past the decoder's
recursion limit or an integer past Python's 4,300 digits (each a traceback), or megabytes of
``{}`` that decode to gigabytes. Every reader here gives a :class:`~engine.errors.ConfigError`
naming the file (and line) instead, in time and memory bounded by the caps below.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.json_size import TooManyValues, decoded_overhead
from engine.text import valid_json

#: Bytes a handed file may have: a cassette or trajectory is read whole.
MAX_FILE_BYTES = 1 << 30
#: What the decoded values of one JSONL file may cost beside their text (engine/json_size.py).
MAX_DECODED_BYTES = 1 << 30


def read_bytes(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (``what`` names it in errors)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"cannot read {what} {path}: it does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file; give a file")
        if info.st_size > max_bytes:
            raise ConfigError(
                f"{what} {path} is {info.st_size:,} bytes, more than the {max_bytes:,} "
                "this command reads"
            )
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # it grew while read
        raise ConfigError(f"{what} {path} is more than the {max_bytes:,} bytes this command reads")
    return data


def read_text(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start:,} is not); is it the right file?"
        ) from None


def parse_jsonl(
    data: bytes, source: str, max_decoded: int = MAX_DECODED_BYTES
) -> list[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of the JSON Lines ``data``.

    Lines are split at ``\\n`` only (JSON text may hold U+2028, which ``str.splitlines``
    splits at); lone surrogates a line escapes become U+FFFD, so the values can be written
    back as UTF-8.
    """
    values: list[tuple[int, Any]] = []
    room = max_decoded
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            room -= decoded_overhead(line, room)
            value = json.loads(line)
        except TooManyValues as exc:
            raise ConfigError(f"{where}: too large to read: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # ValueError: bad JSON or UTF-8, integers past 4,300 digits; RecursionError:
            # arrays nested about 1,000 deep.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ConfigError(f"{where}: not valid JSON ({reason[:200]})") from None
        values.append((number, valid_json(value)))
    return values


def read_jsonl(path: Path, what: str) -> list[tuple[int, Any]]:
    """:func:`parse_jsonl` of the file ``path``."""
    return parse_jsonl(read_bytes(path, what), str(path))


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file ``path`` as a dict."""
    text = read_text(path, what, max_bytes=16 << 20)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} nests arrays or tables too deeply") from None
