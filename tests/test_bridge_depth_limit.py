"""``rlm_query`` at the depth limit reads only what fits the sub-model's window."""

from __future__ import annotations

from pathlib import Path

from engine.rlm.engine import read_head


def test_a_small_context_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("héllo wörld", encoding="utf-8")
    assert read_head(path, 1000) == "héllo wörld"


def test_a_large_context_is_cut_with_a_note_and_no_broken_character(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("é" * 100, encoding="utf-8")  # 2 bytes each
    text = read_head(path, 51)  # the cut falls inside a character
    body, _, note = text.partition("\n[rlm:")
    assert body == "é" * 25
    assert "first 51 of 200 bytes" in note and "rlm_query" in note


def test_a_sparse_giant_costs_only_the_window(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    with path.open("wb") as handle:
        handle.write(b"start ")
        handle.truncate(1 << 40)  # 1 TiB long, nothing on disk
    text = read_head(path, 4096)
    assert text.startswith("start ")
    assert len(text) < 4096 + 200
    assert f"of {1 << 40:,} bytes" in text
