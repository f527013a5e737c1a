"""Which paths a folder context leaves out: nested .gitignore files and --include/--exclude.

Paths are POSIX paths relative to the folder; a folder is matched with a trailing ``/`` so
patterns like ``build/`` apply to it. Rules follow git: the deepest ``.gitignore`` with a
matching pattern decides (so ``!keep.log`` in a subfolder re-includes), and nothing inside an
ignored folder is looked at.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pathspec import GitIgnoreSpec

from engine.errors import ContextError

# A .gitignore is a few hundred bytes; a huge one is not worth reading into memory.
MAX_IGNORE_FILE_BYTES = 1 << 20


class IgnoreRules:
    """The ``.gitignore`` specs met on the way down from the folder's root, deepest last."""

    def __init__(self, specs: tuple[tuple[str, GitIgnoreSpec], ...] = ()) -> None:
        self._specs = specs

    @classmethod
    def for_root(cls, root: Path) -> IgnoreRules:
        """The rules at the root: ``.git/info/exclude`` (when ``.git`` is a folder) and
        the root's ``.gitignore``."""
        rules = cls()
        exclude = root / ".git" / "info" / "exclude"
        lines = _read_lines(exclude) if _is_plain_dir(root / ".git") else None
        if lines:
            rules = IgnoreRules((("", GitIgnoreSpec.from_lines(lines)),))
        return rules.descend("", root)

    def descend(self, rel_dir: str, folder: Path) -> IgnoreRules:
        """The rules inside ``folder`` (at ``rel_dir``, "" for the root)."""
        lines = _read_lines(folder / ".gitignore")
        if not lines:
            return self
        return IgnoreRules((*self._specs, (rel_dir, GitIgnoreSpec.from_lines(lines))))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` is ignored; the deepest ``.gitignore`` with a matching rule wins."""
        for base, spec in reversed(self._specs):
            if base:
                if not rel.startswith(base + "/"):
                    continue
                sub = rel[len(base) + 1 :]
            else:
                sub = rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                return bool(result.include)
        return False


class Globs:
    """``--include`` / ``--exclude`` patterns (gitignore syntax, matched against the dict key)."""

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self._include = _compile(include, "--include")
        self._exclude = _compile(exclude, "--exclude")

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """True when ``rel`` is left out: it matches --exclude, or (a file) misses --include."""
        if self._exclude is not None and self._exclude.match_file(rel + "/" if is_dir else rel):
            return True
        return not is_dir and self._include is not None and not self._include.match_file(rel)


def _compile(patterns: Iterable[str], flag: str) -> GitIgnoreSpec | None:
    lines = [p for p in patterns if p.strip()]
    if not lines:
        return None
    try:
        return GitIgnoreSpec.from_lines(lines)
    except (ValueError, TypeError) as exc:
        raise ContextError(f"invalid {flag} pattern: {exc}; use glob syntax like '*.py'") from exc


def _is_plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_lines(path: Path) -> list[str] | None:
    # Only a regular file, never through a symlink: a link could point anywhere on the host.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_IGNORE_FILE_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_IGNORE_FILE_BYTES)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").splitlines()
