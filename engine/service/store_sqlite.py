"""The embedded job store: one SQLite file under the data dir.

WAL mode, so that readers (status polls, SSE streams) never block the writer; a lock
serialises the one shared connection. The schema is created in place (``IF NOT EXISTS``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from engine.errors import ServiceError
from engine.service.store import Connection, JobStore, store_errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, status);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    turns TEXT NOT NULL,
    holder TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_active REAL NOT NULL,
    closed_at REAL,
    closed_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, status);
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT NOT NULL,
    part INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (key, part)
) WITHOUT ROWID;
"""


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
            self._db.executescript(_SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise ServiceError(
                f"cannot open the job database {path}: {exc}; check that --data-dir is a "
                "writable directory"
            ) from exc

    def _migrate(self) -> None:
        """Add the columns a database made by an older version lacks."""
        for table in ("jobs", "files"):
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if "stored_bytes" not in columns:
                self._db.execute(
                    f"ALTER TABLE {table} ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0"
                )

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

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock, store_errors(sqlite3.Error):
            return self._db.execute(sql, args).fetchall()
