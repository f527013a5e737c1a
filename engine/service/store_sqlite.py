"""The embedded job store: one SQLite file under the data dir.

WAL mode, so that readers (status polls, SSE streams) never block the writer; a lock
serialises the one shared connection. The schema is versioned like PostgreSQL's (the same
yoyo migrations, :mod:`engine.service.migrate`), which also upgrade a database made before
the store used migrations.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from engine.errors import ServiceError
from engine.service.migrate import migrate, sqlite_uri
from engine.service.store import Connection, JobStore, store_errors


class SqliteJobStore(JobStore):
    """The job store in one SQLite file (one service process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits, a crash loses nothing.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as exc:
            raise ServiceError(
                f"cannot open the job database {path}: {exc}; check that --data-dir is a "
                "writable directory"
            ) from exc
        try:
            migrate(sqlite_uri(path), str(path))
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock, store_errors(sqlite3.Error):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield cast(Connection, self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _lock_owner(self, db: Connection, owner: str) -> None:
        """Nothing to take: a write transaction (BEGIN IMMEDIATE) holds SQLite's one write
        lock, so limit-checked writes already run one at a time, in any process."""

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock, store_errors(sqlite3.Error):
            return self._db.execute(sql, args).fetchall()
