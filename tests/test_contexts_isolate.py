"""Document readers run in a worker process under kernel limits: a bomb fails there, clearly."""

from __future__ import annotations

import os
import resource
import zipfile
from pathlib import Path

import pytest

from engine.contexts.isolate import Extractor
from engine.errors import ContextError
from tests.contexts_support import write_docx, write_html, write_pdf


def docx_bomb(path: Path, inflated_bytes: int) -> Path:
    """A real DOCX whose document.xml inflates to ``inflated_bytes`` (a few hundred KB packed)."""
    write_docx(path)
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    body = parts["word/document.xml"]
    cut = body.index(b"</w:body>")
    padding = b"<w:p><w:r><w:t>" + b"A" * inflated_bytes + b"</w:t></w:r></w:p>"
    parts["word/document.xml"] = body[:cut] + padding + body[cut:]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)
    return path


def test_documents_convert_through_one_worker(tmp_path: Path) -> None:
    with Extractor() as extractor:
        pdf = write_pdf(tmp_path / "a.pdf", ["one", ""])
        warnings = extractor.extract(pdf, "pdf", "a.pdf", tmp_path / "a.txt", 0o640)
        assert (tmp_path / "a.txt").read_text().startswith("[page 1]\none")
        assert warnings == ["1 of 2 page(s) have no text layer (scanned? OCR the file)"]
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
        worker = extractor._proc
        html = write_html(tmp_path / "b.html")
        extractor.extract(html, "html", "b.html", tmp_path / "b.txt", 0o644)
        assert extractor._proc is worker  # the parsers are imported once per preparation
    assert worker is not None and worker.returncode == 0


def test_a_decompression_bomb_hits_the_memory_cap_in_the_worker(tmp_path: Path) -> None:
    bomb = docx_bomb(tmp_path / "bomb.docx", 400 << 20)
    assert bomb.stat().st_size < 4 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Extractor(memory_bytes=256 << 20) as extractor:
        with pytest.raises(ContextError, match=r"bomb\.docx") as caught:
            extractor.extract(bomb, "docx", "bomb.docx", tmp_path / "out.txt", 0o644)
        assert "memory" in str(caught.value)
        assert not (tmp_path / "out.txt").exists()
        # The worker is replaced and the next document converts.
        fine = write_docx(tmp_path / "fine.docx")
        extractor.extract(fine, "docx", "fine.docx", tmp_path / "fine.txt", 0o644)
    assert (tmp_path / "fine.txt").read_text().startswith("# Quarterly report")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 << 10  # this process never held the inflated document


def test_text_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "big.html"
    page.write_text("<html><body>" + "<p>word word word</p>" * 20_000 + "</body></html>")
    with (
        Extractor(max_text_bytes=64 << 10) as extractor,
        pytest.raises(ContextError, match=r"cannot convert big\.html"),
    ):
        extractor.extract(page, "html", "big.html", tmp_path / "big.txt", 0o644)
    assert not (tmp_path / "big.txt").exists()


def test_a_reader_that_takes_too_long_is_stopped(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "slow.pdf", ["text"])
    # No worker can start, import its parsers and answer within a millisecond.
    with (
        Extractor(timeout_s=0.001) as extractor,
        pytest.raises(
            ContextError, match=r"slow\.pdf as PDF: reading it took longer than 0\.001 s"
        ),
    ):
        extractor.extract(pdf, "pdf", "slow.pdf", tmp_path / "slow.txt", 0o644)
    assert extractor._proc is None  # killed and reaped
    assert not os.path.exists(tmp_path / "slow.txt")


def test_the_worker_gets_no_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    with Extractor() as extractor:
        extractor.extract(write_html(tmp_path / "a.html"), "html", "a.html", tmp_path / "a", 0o644)
        assert extractor._proc is not None
        environ = Path(f"/proc/{extractor._proc.pid}/environ").read_bytes()
    assert b"sk-should-not-leak" not in environ and b"PYTHONUNBUFFERED=1" in environ


def test_archives_unpack_in_the_worker_with_their_counts(tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("src/a.py", "print('a')\n")
        handle.writestr("../escape.txt", "x")
        handle.writestr("README.md", "# code\n")
    with Extractor() as extractor:
        unpacked = extractor.unpack(archive, tmp_path / "out", 1 << 20)
        assert (unpacked.files, unpacked.skipped) == (2, 1)
        assert (tmp_path / "out" / "src" / "a.py").read_text() == "print('a')\n"
        with pytest.raises(ContextError, match="unpacks to more than 4 bytes"):
            extractor.unpack(archive, tmp_path / "small", 4)
    assert not (tmp_path / "small").exists() and not (tmp_path / "escape.txt").exists()
