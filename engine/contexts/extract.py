"""PDF, DOCX and HTML to plain text on the host, keeping markers that code can cite.

- PDF (pypdf): each page starts with a ``[page N]`` line.
- DOCX (python-docx): headings become ``#`` lines (``## `` for Heading 2 ...), list items
  ``- ``, table rows ``cell | cell``, in document order.
- HTML (beautifulsoup4 with lxml): the ``<title>`` as a ``[title]`` line, headings as ``#``
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
    except ContextError:
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


_HTML_DROP = ["script", "style", "noscript", "template", "svg", "head"]
_HTML_BLOCKS = [
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "ul", "ol",
    "li", "table", "tr", "pre", "blockquote", "dl", "dt", "dd", "figure", "figcaption", "form",
    "hr",
]  # fmt: skip
_HTML_LINES = {"li", "tr", "dt", "dd"}


def _html(path: Path) -> Extracted:
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(path.read_bytes(), "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_HTML_DROP):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            text = heading.get_text(" ", strip=True)
            heading.replace_with(NavigableString(f"\n\n{'#' * level} {text}\n\n"))
    for item in soup.find_all("li"):
        item.insert(0, NavigableString("- "))
    for cell in soup.find_all(["td", "th"]):
        cell.append(NavigableString(" | "))
    for br in soup.find_all("br"):
        br.replace_with(NavigableString("\n"))
    for block in soup.find_all(_HTML_BLOCKS):
        if block.name not in _HTML_LINES:  # list items and rows: one line each, no gap
            block.insert_before(NavigableString("\n"))
        block.append(NavigableString("\n"))
    text = _tidy(soup.get_text())
    text = re.sub(r"[ \t]*\|[ \t]*$", "", text, flags=re.MULTILINE)  # the last cell's separator
    return Extracted((f"[title] {title}\n\n" if title else "") + text)


def _tidy(text: str) -> str:
    """Collapse runs of spaces and of blank lines; strip every line."""
    lines = [re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


_READERS: dict[str, Callable[[Path], Extracted]] = {"pdf": _pdf, "docx": _docx, "html": _html}
