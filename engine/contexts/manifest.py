"""What went into a context and what was left out, for the root model and the trajectory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_WARNINGS = 20


@dataclass
class Manifest:
    """Counts kept while a context is prepared on the host.

    ``files`` were included (``extracted`` of them converted to text from PDF, DOCX or HTML);
    every other field counts what was skipped and why.
    """

    sources: int = 0
    files: int = 0
    extracted: int = 0
    bytes: int = 0
    ignored_files: int = 0
    ignored_dirs: int = 0
    excluded: int = 0
    binary: int = 0
    symlinks_outside: int = 0
    symlinks_skipped: int = 0
    special: int = 0
    too_deep: int = 0  # folders nested deeper than the walk goes (not entered)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Keep a note for the description (the first few only: a folder can hold thousands)."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One sentence with the counts (only the non-zero ones), for the root prompt."""
        included = f"{self.files:,} file{_s(self.files)} included"
        if self.extracted:
            included += (
                f" ({self.extracted:,} converted to text from PDF/DOCX/HTML on the host, with "
                "[page N] markers for PDF pages and '#' heading lines for sections)"
            )
        skipped = [
            (self.ignored_files, "file(s) ignored by .gitignore"),
            (self.ignored_dirs, "folder(s) ignored by .gitignore (not entered)"),
            (self.excluded, "file(s) or folder(s) excluded by --include/--exclude"),
            (self.binary, "binary file(s)"),
            (self.symlinks_outside, "symlink(s) pointing outside the folder (not followed)"),
            (self.symlinks_skipped, "other symlink(s) (to folders, or broken)"),
            (self.special, "not regular files (pipes, sockets, devices)"),
            (self.too_deep, "folder(s) nested too deep (not entered)"),
        ]
        parts = [f"{count:,} {why}" for count, why in skipped if count]
        text = f"Prepared on the host: {included}"
        text += f"; skipped: {', '.join(parts)}." if parts else "; nothing skipped."
        if self.warnings:
            text += " Notes: " + "; ".join(self.warnings) + "."
        return text


def _s(count: int) -> str:
    return "" if count == 1 else "s"
