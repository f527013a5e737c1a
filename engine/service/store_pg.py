"""The shared job store: PostgreSQL, used by any number of service replicas.

The schema is versioned (``migrations/``, applied with yoyo-migrations under its lock when a
store opens, see :mod:`engine.service.migrate`). On top of the shared SQL of
:class:`JobStore`, replicas use the queue operations here: :meth:`PgJobStore.claim` takes
the oldest queued job with ``FOR UPDATE SKIP LOCKED`` (so a job runs on one replica only)
and gives the claimer a lease it renews (:meth:`renew`) and a claim token that fences the
attempt's writes; :meth:`reclaim` re-queues or fails the jobs whose lease expired (their
replica died). Lease times use the database's clock, so replicas' clocks may differ.
Triggers NOTIFY ``rlm_job``/``rlm_queue``/``rlm_cancel`` on every change (see the migration).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.errors import ServiceError
from engine.log import get_logger
from engine.service.migrate import migrate
from engine.service.store import (
    CANCELLED,
    FAILED,
    JOB_COLUMNS,
    QUEUED,
    RUNNING,
    Connection,
    Cursor,
    JobRecord,
    JobStore,
    KeyLimits,
    Recovery,
    drop_events,
    job_from_row,
    new_claim_token,
    store_errors,
    utf8,
)

log = get_logger(__name__)

LOST_REASON = "replica lost"
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"


def _dialect(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgConnection(Connection):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Cursor:
        cursor: Cursor = self._conn.execute(_dialect(sql), args)
        return cursor


@dataclass(frozen=True)
class Renewal:
    """What :meth:`PgJobStore.renew` found: the jobs this replica still holds, and which of
    them a client asked (on any replica) to cancel."""

    held: set[str]
    cancel: set[str]


class PgJobStore(JobStore):
    """The job store in PostgreSQL (``postgresql://user:password@host:port/db``)."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = 8, timeout_s: float = 30.0) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        _, rest = url.split("://", 1)
        migrate(f"postgresql+psycopg://{rest}", _redact(url))
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            timeout=timeout_s,
            open=False,
            name="rlm-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except Exception as exc:
            self._pool.close()
            raise ServiceError(f"cannot connect to the job database: {exc}") from exc

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        import psycopg
        import psycopg_pool

        with (
            store_errors(psycopg.Error, psycopg_pool.PoolTimeout),
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            yield _PgConnection(conn)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg
        import psycopg_pool

        with store_errors(psycopg.Error, psycopg_pool.PoolTimeout), self._pool.connection() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(_dialect(sql), args).fetchall()
            return rows

    def _lock_owner(self, db: Connection, owner: str) -> None:
        """A transaction-scoped advisory lock on ``owner``: limit-checked writes of one key
        run one at a time across every replica (READ COMMITTED: each statement after the
        lock sees what the previous holder committed), other keys' writes are not held up."""
        db.execute("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", (owner_lock_id(owner),))

    # --- the shared queue -----------------------------------------------------------------

    def claim(self, replica: str, lease_s: float) -> JobRecord | None:
        """Take the oldest queued job for ``replica`` with a lease of ``lease_s`` seconds and
        a new claim token (the fencing token of this attempt's writes); None when nothing is
        queued (or every queued row is being claimed right now)."""
        with self._tx() as db:
            row = db.execute(
                f"UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1, "
                f"lease_owner = ?, lease_until = {_NOW} + ?, claim_token = ? "
                "WHERE id = (SELECT id FROM jobs WHERE status = ? ORDER BY created_at, rowid "
                "LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {JOB_COLUMNS}",
                (RUNNING, time.time(), replica, lease_s, new_claim_token(), QUEUED),
            ).fetchone()
        return job_from_row(row) if row is not None else None

    def add_held(
        self,
        job_id: str,
        *,
        owner: str,
        kind: str,
        request: dict[str, Any],
        replica: str,
        lease_s: float,
        limits: KeyLimits | None = None,
    ) -> JobRecord:
        """Insert a job already running on ``replica`` under its lease (a session message:
        it must run where the session's kernel lives, so it never enters the queue). With
        ``limits``, refuse (:class:`QuotaExceeded`, :class:`KeyLimitReached`) a job the owner
        may not add."""
        text = json.dumps(request)
        with self._tx() as db:
            self._admit(db, owner, utf8(text), limits)
            row = db.execute(
                "INSERT INTO jobs (id, owner, kind, status, request, created_at, started_at, "
                "attempts, lease_owner, lease_until, claim_token, stored_bytes) VALUES (?, ?, ?, "
                f"?, ?, ?, ?, 1, ?, {_NOW} + ?, ?, ?) RETURNING {JOB_COLUMNS}",
                (
                    job_id,
                    owner,
                    kind,
                    RUNNING,
                    text,
                    time.time(),
                    time.time(),
                    replica,
                    lease_s,
                    new_claim_token(),
                    utf8(text),
                ),
            ).fetchone()
        return job_from_row(row)

    def renew(self, replica: str, lease_s: float) -> Renewal:
        """Extend the leases of every job ``replica`` runs."""
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE jobs SET lease_until = {_NOW} + ? "
                "WHERE lease_owner = ? AND status = ? RETURNING id, cancel_requested",
                (lease_s, replica, RUNNING),
            ).fetchall()
        return Renewal({r[0] for r in rows}, {r[0] for r in rows if r[1]})

    def release(self, replica: str) -> None:
        """Expire ``replica``'s leases now (it stops): others reclaim its jobs at once."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET lease_until = 0 WHERE lease_owner = ? AND status = ?",
                (replica, RUNNING),
            )

    def request_cancel(self, job_id: str) -> bool:
        """Ask the replica running ``job_id`` to cancel it; False if it is not running."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET cancel_requested = TRUE WHERE id = ? AND status = ?",
                (job_id, RUNNING),
            )
            return cursor.rowcount == 1

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it is still queued (no replica has claimed it)."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ? "
                "WHERE id = ? AND status = ?",
                (CANCELLED, "cancelled by the user", time.time(), job_id, QUEUED),
            )
            return cursor.rowcount == 1

    def reclaim(self) -> Recovery:
        """Running jobs whose lease expired: queued again when retries allow (their partial
        events dropped), cancelled when a cancel was asked, else failed "replica lost"."""
        failed: list[str] = []
        requeued: list[str] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts, max_retries, cancel_requested FROM jobs "
                f"WHERE status = ? AND COALESCE(lease_until, 0) < {_NOW} "
                "ORDER BY created_at, rowid FOR UPDATE SKIP LOCKED",
                (RUNNING,),
            ).fetchall()
            for job_id, attempts, max_retries, cancel in rows:
                if cancel or attempts > max_retries:
                    status, error = (
                        (CANCELLED, "cancelled by the user")
                        if cancel
                        else (
                            FAILED,
                            LOST_REASON,
                        )
                    )
                    db.execute(
                        "UPDATE jobs SET status = ?, error = ?, finished_at = ?, "
                        "lease_owner = NULL, lease_until = NULL WHERE id = ?",
                        (status, error, time.time(), job_id),
                    )
                    failed.append(job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET status = ?, started_at = NULL, lease_owner = NULL, "
                        "lease_until = NULL, claim_token = NULL WHERE id = ?",
                        (QUEUED, job_id),
                    )
                    drop_events(db, job_id)
                    requeued.append(job_id)
        return Recovery(failed, requeued)


def owner_lock_id(owner: str) -> int:
    """The advisory lock id of ``owner``'s limits: a signed 64-bit hash (a collision only
    makes two keys' writes wait for each other)."""
    digest = hashlib.blake2b(f"rlm-key-limits:{owner}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
