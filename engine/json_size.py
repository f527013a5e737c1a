"""How much memory a JSON body decodes to, bounded before it is decoded.

A body cap counts bytes, but Python objects cost far more than their JSON: ``{}`` is two
bytes of JSON and a 64-byte dict, so 16 MiB of ``[{},{},...]`` decoded to 404 MiB in the
orchestrator (a 64 MiB inline context of them, about 1.6 GiB in the service). Every JSON value
(a container, an item, a key) is announced by one of ``{ [ , :`` outside a string, so counting
those bytes bounds the number of values, and :data:`BYTES_PER_VALUE` times that bounds what
they cost beside their text (strings and numbers take at most 4 bytes a character of the
body's text, which the byte cap already bounds).
"""

from __future__ import annotations

import re

#: Bytes of Python objects one JSON value may decode to, its text aside. Measured (CPython
#: 3.11, json.loads): 36 to 70 bytes a counted value for arrays of ``{}``, ``[]``, ``[[]]``,
#: ``{"a":1}``, ``{"a":{}}``, numbers and unique keys (a one-key dict is the dearest).
BYTES_PER_VALUE = 96

_STRUCTURE = (b"{", b"[", b",", b":")
# A JSON string, escapes included; possessive so a long string is one fast scan. An
# unterminated one runs to the end of the body: a search retrying at every later quote would
# take quadratic time on a body of escaped quotes that never closes.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)


class TooManyValues(ValueError):
    """A JSON body that would decode to more Python objects than its reader allows."""

    def __init__(self, values: int, limit_bytes: int) -> None:
        self.values = values
        self.limit_bytes = limit_bytes
        super().__init__(
            f"the JSON holds about {values:,} values (lists, objects, keys, items), which take "
            f"about {values * BYTES_PER_VALUE >> 20} MiB of memory decoded, more than the "
            f"{limit_bytes >> 20} MiB allowed; send fewer, larger items (one string instead of "
            "many small ones)"
        )


def values_bound(body: bytes | bytearray, enough: int = 0) -> int:
    """An upper bound on the number of values ``body`` decodes to, exact enough to tell
    whether it exceeds ``enough``.

    Counting the structural bytes everywhere is fast (a few ms for 64 MiB) and already a bound;
    only when it exceeds ``enough`` are the bytes inside strings (a CSV in a prompt) left out,
    by a regex pass whose cost grows with the number of strings. That number is bounded first,
    from the quotes alone: with ``q`` quotes and ``e`` of them after a backslash, a body holds
    between ``(q - e) / 2`` and ``q - e`` strings (each has two unescaped delimiters, and only
    its closing one can follow a backslash), so a body of more than ``2 * enough`` strings is
    counted as that many values without the pass (each string is a value).
    """
    rough = 1 + sum(body.count(c) for c in _STRUCTURE)
    if rough <= enough:
        return rough
    at_least_strings = (body.count(b'"') - body.count(b'\\"')) // 2
    if at_least_strings > enough:
        return at_least_strings
    bare = _STRING.sub(b"", body)
    return 1 + sum(bare.count(c) for c in _STRUCTURE)


def decoded_overhead(body: bytes | bytearray, limit_bytes: int) -> int:
    """Bytes ``body``'s values cost decoded, beside their text (an upper bound).

    Raises :class:`TooManyValues` when that is over ``limit_bytes``.
    """
    values = values_bound(body, limit_bytes // BYTES_PER_VALUE)
    if values * BYTES_PER_VALUE > limit_bytes:
        raise TooManyValues(values, limit_bytes)
    return values * BYTES_PER_VALUE
