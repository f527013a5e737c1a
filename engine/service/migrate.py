"""Versioned schema migrations for both job stores, applied with yoyo-migrations.

One directory (``migrations/``), one module per version, the same version ids in SQLite and
PostgreSQL. A step that needs different SQL per database uses :func:`sql` (PostgreSQL's
triggers, SQLite's ``WITHOUT ROWID``); a step whose SQL is one statement valid in both may be
a plain string. Migrations run under yoyo's lock, so replicas (or two processes on one SQLite
file) starting together apply each version once.

SQLite databases made before the store used yoyo (no ``_yoyo_migration`` table) upgrade in
place: the first versions only create what is missing (``IF NOT EXISTS``) and add a column
only where it lacks, so they are safe on a database that already has part of the schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.errors import ServiceError
from engine.log import get_logger

log = get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")

Step = Callable[[Any], None]


def is_sqlite(conn: Any) -> bool:
    """True when a migration step runs on SQLite (else PostgreSQL)."""
    return isinstance(conn, sqlite3.Connection)


def statements(script: str) -> list[str]:
    """``script`` split into complete statements (sqlite3 runs one per ``execute``)."""
    found: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    if current.strip():
        found.append(current.strip())
    return found


def sql(*, postgresql: str, sqlite: str) -> Step:
    """A step running ``postgresql`` or ``sqlite`` (each a script of ``;``-ended statements),
    whichever database it migrates."""

    def run(conn: Any) -> None:
        cursor = conn.cursor()
        try:
            if is_sqlite(conn):
                for statement in statements(sqlite):
                    cursor.execute(statement)
            else:
                cursor.execute(postgresql)
        finally:
            cursor.close()

    return run


def add_column(table: str, column: str, definition: str) -> Step:
    """A step adding ``column`` to ``table`` unless it is there already (databases made by
    older versions of the SQLite store may have it without a record of the migration)."""

    def run(conn: Any) -> None:
        cursor = conn.cursor()
        try:
            if is_sqlite(conn):
                cursor.execute(f"PRAGMA table_info({table})")
                if column in {row[1] for row in cursor.fetchall()}:
                    return
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            else:
                cursor.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
                )
        finally:
            cursor.close()

    return run


def drop_column(table: str, column: str) -> Step:
    """The rollback of :func:`add_column`."""

    def run(conn: Any) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        finally:
            cursor.close()

    return run


def sqlite_uri(path: Path) -> str:
    """yoyo's URI of the SQLite file ``path`` (percent-encoded: yoyo hands it to SQLite as a
    ``file:`` URI, which decodes it)."""
    return "sqlite:///" + quote(str(path.resolve()))


def migrate(uri: str, shown: str) -> list[str]:
    """Apply the pending migrations to the database at yoyo ``uri`` (``shown`` names it in
    errors, without a password); returns the ids applied."""
    from yoyo import get_backend, read_migrations

    try:
        backend = get_backend(uri)
    except Exception as exc:
        raise ServiceError(
            f"cannot connect to the job database ({shown}): {exc}; check --database-url "
            "(postgresql://user:password@host:port/database) or that --data-dir is writable, "
            "and that the database is running"
        ) from exc
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(MIGRATIONS)))
            if pending:
                log.info("store.migrating", database=shown, migrations=[m.id for m in pending])
                backend.apply_migrations(pending)
            return [m.id for m in pending]
    except ServiceError:
        raise
    except Exception as exc:
        raise ServiceError(f"cannot migrate the job database ({shown}): {exc}") from exc
    finally:
        backend.connection.close()
