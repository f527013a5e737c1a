"""Making untrusted text writable as UTF-8: lone surrogates replaced, everything else kept.

JSON may escape a lone surrogate (``"\\ud800"``) and Python decodes it into a ``str`` that no
UTF-8 writer accepts. A model provider, a forged kernel message or a tool can hand the
orchestrator such text; written as it is, it raised ``UnicodeEncodeError`` out of the
trajectory writer and ended the run with a traceback. Every sink that writes untrusted text
(the trajectory, the model client's replies) passes it through :func:`valid_text` or
:func:`valid_json`, whose fast path (the text encodes) costs one encode and returns the same
object.
"""

from __future__ import annotations

import re
from typing import Any

#: What stands for each lone surrogate: the Unicode replacement character.
REPLACEMENT = "\ufffd"
# Any surrogate code point left in a str is unpaired for UTF-8 (JSON decoding already joins
# an escaped pair into one character).
_SURROGATE = re.compile("[\ud800-\udfff]")
# The JSON escape of a surrogate code point (a lone one, or half of a pair the decoder joins).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (``text`` itself when valid)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(REPLACEMENT, text)
    return text


def valid_json(value: Any) -> Any:
    """``value`` (parsed JSON, or events built of it) with every string made :func:`valid_text`,
    keys included; containers are rebuilt only where a string changed."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        items = [(valid_json(k), valid_json(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        cleaned = [valid_json(v) for v in value]
        if all(a is b for a, b in zip(cleaned, value, strict=True)):
            return value
        return cleaned
    return value


def json_has_lone_surrogate(body: bytes | bytearray, value: Any) -> bool:
    """Whether ``value``, decoded from the JSON ``body``, holds a lone surrogate (looked for
    only when ``body`` escapes a surrogate at all, so other bodies cost one regex scan)."""
    return _SURROGATE_ESCAPE.search(body) is not None and valid_json(value) is not value
