"""Reading the root model's reply: fenced code blocks and ``FINAL(...)`` / ``FINAL_VAR(...)``.

The loop asks the provider to stop at the text that closes a code block (see
:data:`STOP_SEQUENCES`); the stop text itself is not returned, so the last block of a reply is
often left open. An open block at the end of a reply is therefore accepted as complete.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from engine.models.stops import cut_at_stop as cut_at_stop_strings

# Generation stops right before a closing fence. An opening fence carries a language tag
# ("```repl\n"), so it does not match; only a bare "```" on its own line does.
STOP_SEQUENCES: tuple[str, ...] = ("\n```\n",)

# Languages whose blocks are executed. A bare fence (no tag) is accepted too because small
# models often drop the tag; blocks tagged with another language (```text, ```json) are not.
_CODE_LANGS = frozenset({"repl", "python", "py", "python3", "ipython", ""})

_FENCE_OPEN = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$")
_FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")
_FINAL_START = re.compile(r"^[ \t>*_`]*(FINAL_VAR|FINAL)[ \t]*\(", re.MULTILINE)


@dataclass(frozen=True)
class Segment:
    """A piece of a reply: prose, or a code block with its language tag."""

    kind: str  # "text" | "code"
    text: str
    lang: str = ""


@dataclass(frozen=True)
class FinalDirective:
    """A ``FINAL(...)`` or ``FINAL_VAR(...)`` written in the reply's prose.

    ``kind`` is ``"final"`` (``argument`` is the raw text between the parentheses) or
    ``"final_var"`` (``argument`` is the variable name, quotes removed).
    """

    kind: str
    argument: str


def split_reply(reply: str) -> list[Segment]:
    """Split ``reply`` into prose and fenced blocks, in order.

    A block left open at the end of the reply (generation stopped at its closing fence) is
    returned as a complete block.
    """
    segments: list[Segment] = []
    prose: list[str] = []
    code: list[str] | None = None
    lang = ""
    for line in reply.splitlines():
        if code is None:
            opened = _FENCE_OPEN.match(line)
            if opened:
                if prose:
                    segments.append(Segment("text", "\n".join(prose)))
                    prose = []
                code, lang = [], opened.group(1).lower()
            else:
                prose.append(line)
        elif _FENCE_CLOSE.match(line):
            segments.append(Segment("code", "\n".join(code), lang))
            code = None
        else:
            code.append(line)
    if code is not None:
        segments.append(Segment("code", "\n".join(code), lang))
    if prose:
        segments.append(Segment("text", "\n".join(prose)))
    return segments


def cut_at_stop(reply: str) -> str:
    """``reply`` up to its first stop sequence, as the provider would have cut it.

    For replies generated without :data:`STOP_SEQUENCES` (a reasoning model's fences inside
    its ``<think>`` block must not end the reply): what follows the first closing fence is the
    model imagining the cell's output, or answering before it saw it.
    """
    return cut_at_stop_strings(reply, STOP_SEQUENCES)[0]


def extract_code_blocks(reply: str) -> list[str]:
    """Return the executable code blocks of ``reply`` (```repl / ```python / bare), in order."""
    return [
        s.text
        for s in split_reply(reply)
        if s.kind == "code" and s.lang in _CODE_LANGS and s.text.strip()
    ]


def prose_text(reply: str) -> str:
    """Return ``reply`` without its fenced blocks."""
    return "\n".join(s.text for s in split_reply(reply) if s.kind == "text").strip()


def find_final(reply: str) -> FinalDirective | None:
    """Find the first ``FINAL(...)`` / ``FINAL_VAR(...)`` at the start of a prose line.

    Only prose counts: a ``FINAL`` inside a code block is executed by the kernel instead.
    Requiring the start of a line avoids matching sentences that merely mention ``FINAL()``.
    """
    text = prose_text(reply)
    for match in _FINAL_START.finditer(text):
        inner = _balanced_argument(text, match.end())
        if inner is None:
            continue
        inner = inner.strip()
        if match.group(1) == "FINAL_VAR":
            name = _unquote(inner)
            if name.isidentifier():
                return FinalDirective("final_var", name)
            continue
        return FinalDirective("final", inner)
    return None


def literal_text(argument: str) -> str | None:
    """If ``argument`` is a Python literal (``"Paris"``, ``42``), return it as text, else None."""
    try:
        value = ast.literal_eval(argument)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, str) else repr(value)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _balanced_argument(text: str, start: int) -> str | None:
    """Return the text from ``start`` to the parenthesis closing the one just before it.

    Quotes are honoured when the argument is a string literal, so that ``FINAL("a (b")``
    works; in plain prose an apostrophe ("the user's") is just a character. An unclosed call
    (the reply was cut) yields the rest of the text.
    """
    depth = 1
    quote: str | None = None
    quoted = text[start:].lstrip()[:1] in ("'", '"')
    i = start
    while i < len(text):
        if quote:
            if text[i] == "\\":
                i += 2
            elif text.startswith(quote, i):
                i += len(quote)
                quote = None
            else:
                i += 1
            continue
        ch = text[i]
        if quoted and ch in "'\"":
            quote = text[i : i + 3] if text.startswith(ch * 3, i) else ch
            i += len(quote)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    rest = text[start:].rstrip()
    return rest or None
