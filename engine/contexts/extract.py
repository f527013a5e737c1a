"""PDF, DOCX and HTML to plain text on the host, keeping markers that code can cite.

- PDF (pypdf): each page starts with a ``[page N]`` line.
- DOCX (python-docx): headings become ``#`` lines (``## `` for Heading 2 ...), list items
  ``- ``, table rows ``cell | cell``, in document order.
- HTML (lxml's HTML parser, which copes with broken markup; beautifulsoup4 on top of it was
  40 times slower on a 4 MB page): the ``<title>`` as a ``[title]`` line, headings as ``#``
  lines, list items ``- ``, table rows ``cell | cell``; scripts, styles and ``<head>`` dropped.

The sandbox never sees the original bytes: only the text these functions return.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ContextError

DOCUMENT_KINDS = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html"}


@dataclass
class Extracted:
    """A document's text and what the reader should know about it."""

    text: str
    warnings: list[str] = field(default_factory=list)


def document_kind(name: str) -> str | None:
    """``"pdf"``, ``"docx"`` or ``"html"`` for a file name with that extension, else None."""
    return DOCUMENT_KINDS.get(Path(name).suffix.lower())


def sniff_kind(head: bytes) -> str | None:
    """The document kind from a file's first bytes (for standard input, which has no name)."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04") and b"word/" in head[:4096]:
        return "docx"
    start = head[:1024].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    return None


def extract_text(path: Path, kind: str, display: str) -> Extracted:
    """The text of the document at ``path``; ``display`` names it in errors.

    Raises :class:`ContextError` naming the file when it cannot be read as ``kind``.
    """
    reader = _READERS[kind]
    try:
        return reader(path)
    except (ContextError, MemoryError):
        raise
    except Exception as exc:  # parsers of hostile input raise anything; report, never crash
        detail = str(exc).strip() or type(exc).__name__
        raise ContextError(
            f"cannot read {display} as {kind.upper()}: {detail}; check that the file is a valid "
            f"{kind.upper()} (open it in a viewer), convert it to text, or leave it out with "
            "--exclude"
        ) from exc


def _pdf(path: Path) -> Extracted:
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise ContextError(
            f"cannot read {path.name}: the PDF is password-protected; decrypt it first "
            "(e.g. qpdf --decrypt) or leave it out"
        )
    parts: list[str] = []
    empty = 0
    for number, page in enumerate(reader.pages, start=1):
        text = (page.extract_text() or "").strip()
        if not text:
            empty += 1
        parts.append(f"[page {number}]\n{text}\n")
    result = Extracted("\n".join(parts))
    if empty:
        result.warnings.append(
            f"{empty} of {len(parts)} page(s) have no text layer (scanned? OCR the file)"
        )
    return result


def _docx(path: Path) -> Extracted:
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(_table_rows(block))
            lines.append("")
            continue
        text = block.text.strip()
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = _heading_level(style)
        if level:
            lines.extend(["", "#" * level + " " + text, ""])
        elif style.lower().startswith("list"):
            lines.append("- " + text)
        else:
            lines.append(text)
    return Extracted(_tidy("\n".join(lines)))


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return min(int(match.group(1)), 6) if match else 0


def _table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells = [cell.text.strip().replace("\n", " ") for cell in row.cells]
        yield " | ".join(cells)


_HTML_DROP = {"script", "style", "noscript", "template", "svg", "head", "title"}
_HTML_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "ul", "ol",
    "li", "table", "tr", "pre", "blockquote", "dl", "dt", "dd", "figure", "figcaption", "form",
    "hr",
}  # fmt: skip
_HTML_LINES = {"li", "tr", "dt", "dd"}


def _html(path: Path) -> Extracted:
    import lxml.html

    data = path.read_bytes()
    if not data.strip():
        return Extracted("")
    try:
        # Decoded here when it is UTF-8: without a <meta charset> libxml2 would assume Latin-1.
        root = lxml.html.document_fromstring(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # ValueError: an XML encoding declaration
        root = lxml.html.document_fromstring(data)
    titles = root.xpath("//title")
    title = " ".join(titles[0].text_content().split()) if titles else ""
    bodies = root.xpath("//body")
    text = _tidy("".join(_html_text(bodies[0] if bodies else root)))
    text = re.sub(r"[ \t]*\|[ \t]*$", "", text, flags=re.MULTILINE)  # the last cell's separator
    return Extracted((f"[title] {title}\n\n" if title else "") + text)


def _html_text(root: Any) -> Iterator[str]:
    """The text under ``root`` in one pass and without recursion (hostile pages nest deeply).

    Each element gives: a line break before a block, its text, its children, a line break
    after a block, then its tail (the text after it inside its parent).
    """
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        name = item.tag if isinstance(item.tag, str) else ""  # comments, processing instr.
        tail = item.tail if item is not root and item.tail else ""
        if not name or name in _HTML_DROP:
            if tail:
                yield tail
            continue
        if name in _HTML_HEADINGS:
            words = " ".join(item.text_content().split())
            yield f"\n\n{'#' * int(name[1])} {words}\n\n{tail}"
            continue
        if name == "br":
            yield "\n" + tail
            continue
        before = "\n" if name in _HTML_BLOCKS and name not in _HTML_LINES else ""
        after = "\n" if name in _HTML_BLOCKS else ""
        if name == "li":
            before += "- "
        if name in ("td", "th"):
            after = " | "
        stack.append(after + tail)
        stack.extend(reversed(list(item)))
        yield before + (item.text or "")


_HTML_HEADINGS = {f"h{level}" for level in range(1, 7)}


def _tidy(text: str) -> str:
    """Collapse runs of spaces and of blank lines; strip every line."""
    lines = [re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


_READERS: dict[str, Callable[[Path], Extracted]] = {"pdf": _pdf, "docx": _docx, "html": _html}
