"""What one service process keeps on its own disk of the store's jobs, sessions and uploads,
and its removal once the store no longer has them.

A replica keeps copies of what it ran: a job's inline context and trajectory under
``<data dir>/jobs/<job id>/``, a session's under ``jobs/<session id>/`` (a message's trajectory
as ``<job id>.jsonl`` in it), an upload under ``files/<file id>/``. The replica that deletes a
record (a DELETE, or the retention sweep) removes only its own copies, so every other replica
removes its copies when PostgreSQL tells it of the deletion (:func:`drop`), and, for a
notification it missed or a deletion while it was down, when it compares its folders with the
store (:func:`orphans`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.service.sessions import SESSION_ID_PREFIX

#: The shape of every id the service makes (jobs: hex; sessions and uploads: a prefix and
#: hex). A name of any other shape is never turned into a path: the payload of a notification
#: comes from the database, not from this process.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
#: A job id, as ``engine.service.jobs.new_job_id`` makes it (a session message's trajectory
#: file is named by it).
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
#: A folder younger than this may belong to a record not stored yet (an upload arriving, a
#: context written just before its row): the comparison with the store leaves it alone.
GRACE_S = 600.0


def is_id(name: str) -> bool:
    """True when ``name`` has the shape of a job, session or upload id."""
    return ID_PATTERN.match(name) is not None


def drop(jobs_dir: Path, files_dir: Path, key: str, session_id: str | None = None) -> bool:
    """Remove this process's copies of the job, session or upload ``key`` (a message of the
    session ``session_id``: its trajectory file in the session's folder). False, removing
    nothing, for a name that is not an id."""
    if not is_id(key) or (session_id and not is_id(session_id)):
        return False
    shutil.rmtree(jobs_dir / key, ignore_errors=True)
    shutil.rmtree(files_dir / key, ignore_errors=True)
    if session_id:
        (jobs_dir / session_id / f"{key}.jsonl").unlink(missing_ok=True)
    return True


def orphans(
    jobs_dir: Path,
    files_dir: Path,
    known: Callable[[Iterable[str]], set[str]],
    grace_s: float = GRACE_S,
    now: float | None = None,
) -> list[Path]:
    """The folders (and session message files) under ``jobs_dir`` and ``files_dir`` whose
    id the store no longer has (``known``: the given ids it has), older than ``grace_s``."""
    cutoff = (time.time() if now is None else now) - grace_s
    candidates: dict[str, list[Path]] = {}
    for root in (jobs_dir, files_dir):
        for folder in _children(root):
            if folder.is_dir() and not folder.is_symlink() and is_id(folder.name):
                candidates.setdefault(folder.name, []).append(folder)
    # A session's folder holds one trajectory file per message, named by the message's job.
    for folder in _children(jobs_dir):
        session = folder.name.startswith(SESSION_ID_PREFIX)
        if session and folder.is_dir() and not folder.is_symlink():
            for path in _children(folder):
                if path.suffix == ".jsonl" and JOB_ID_PATTERN.match(path.stem):
                    candidates.setdefault(path.stem, []).append(path)
    if not candidates:
        return []
    present = known(candidates)
    return [
        path
        for key, paths in candidates.items()
        if key not in present
        for path in paths
        if _newest_mtime(path) < cutoff
    ]


def remove(paths: Iterable[Path]) -> int:
    """Remove ``paths`` (folders or files); returns how many."""
    count = 0
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        count += 1
    return count


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _newest_mtime(path: Path) -> float:
    """The newest modification time of ``path`` and what it directly holds (an upload
    being written changes its file's time, not its folder's)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile: nothing to remove
    if path.is_dir() and not path.is_symlink():
        for child in _children(path):
            try:
                newest = max(newest, child.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest
