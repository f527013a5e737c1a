"""The durable job store: jobs, their events (the trajectory) and uploaded files.

:class:`JobStore` is the one interface, with the SQL both backends share (written in the
common subset of SQLite and PostgreSQL, ``?`` placeholders). Two implementations provide the
connection and the schema: :class:`~engine.service.store_sqlite.SqliteJobStore` (the embedded
default, one file under the data dir) and :class:`~engine.service.store_pg.PgJobStore`
(PostgreSQL, shared by service replicas). :func:`open_store` picks one from a URL. Every call
is short (one statement or one small transaction), so the store is used synchronously from
the event loop. Nothing here knows about HTTP or the engine.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from engine.errors import ServiceError

# Job states; the last three are final.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
JOB_STATES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
RESTART_REASON = "service restarted"
BLOB_PART_BYTES = 4 << 20


class StoreError(ServiceError):
    """The job database refused a read or write (locked too long, disk full, gone)."""


class QuotaExceeded(ServiceError):
    """A write would take its owner past the storage quota; nothing was written. Checked in
    the write's own transaction, so concurrent writes (from any replica) cannot pass it."""

    def __init__(self, quota: int, left: int) -> None:
        super().__init__(f"the storage quota of {quota:,} bytes would be exceeded ({left:,} left)")
        self.quota = quota
        self.left = left


class KeyLimitReached(ServiceError):
    """A key already holds as many queued or running jobs (``what`` is "jobs") or open
    sessions ("sessions") as it may; nothing was written. Checked like :class:`QuotaExceeded`."""

    def __init__(self, what: str, count: int, limit: int) -> None:
        super().__init__(f"{count} {what} held, limit {limit}")
        self.what = what
        self.count = count
        self.limit = limit


@dataclass(frozen=True)
class KeyLimits:
    """What one key may hold, checked by each write that adds to it in the write's own
    transaction, under a lock on the key, so that concurrent writes (on any replicas) cannot
    pass a limit together. None: no limit."""

    storage_bytes: int | None = None
    active_jobs: int | None = None
    open_sessions: int | None = None


class ClaimLost(ServiceError):
    """A write for an attempt of a job that no longer holds its claim (its replica lost the
    lease and the job was queued again or ended): the attempt must stop without an outcome."""


@contextmanager
def store_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn a backend's errors (``kinds``) into :class:`StoreError`, so that the service fails
    the job that met one, never itself."""
    try:
        yield
    except kinds as exc:
        raise StoreError(f"the job database failed: {exc}") from exc


def open_store(target: str | Path) -> JobStore:
    """The store at ``target``: a ``postgresql://`` URL, else a SQLite database file."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from engine.service.store_pg import PgJobStore

        return PgJobStore(target)
    from engine.service.store_sqlite import SqliteJobStore

    return SqliteJobStore(Path(target))


@dataclass(frozen=True)
class JobRecord:
    """One row of the ``jobs`` table (``request`` and ``result`` decoded)."""

    id: str
    owner: str
    kind: str
    status: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_retries: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: the fencing token of the current attempt (set when the job moves to "running"); the
    #: attempt's outcome and events are written only while the job still carries it.
    claim_token: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES


#: Session states: open (its kernel may be live on the replica in ``holder``) and closed.
SESSION_OPEN, SESSION_CLOSED = "open", "closed"


@dataclass(frozen=True)
class SessionRecord:
    """One row of the ``sessions`` table (``request`` and ``turns`` decoded).

    ``request`` is what the session was created with (context path or file ids, models,
    limits, tools); ``turns`` lists its queries: ``{"job_id", "query", "answer",
    "stop_reason", "kernel_note"}``. ``holder`` names the service process that holds its kernel.
    """

    id: str
    owner: str
    status: str
    request: dict[str, Any]
    turns: list[dict[str, Any]]
    holder: str
    created_at: float
    last_active: float
    closed_at: float | None
    closed_reason: str | None

    @property
    def open(self) -> bool:
        return self.status == SESSION_OPEN


@dataclass(frozen=True)
class FileRecord:
    """One uploaded file."""

    id: str
    owner: str
    filename: str
    bytes: int
    path: Path
    created_at: float


@dataclass(frozen=True)
class Recovery:
    """What :meth:`JobStore.recover` did after a restart."""

    failed: list[str]
    requeued: list[str]


class Cursor(ABC):
    """What a statement returns, in both backends (a DB-API cursor)."""

    rowcount: int

    @abstractmethod
    def fetchone(self) -> Any: ...

    @abstractmethod
    def fetchall(self) -> list[Any]: ...


class Connection(ABC):
    """A connection inside one transaction; SQL uses ``?`` placeholders in both backends."""

    @abstractmethod
    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Cursor: ...


class JobStore(ABC):
    """Jobs, events and files; use as a context manager (closes the database).

    Subclasses provide the connection (:meth:`_tx`, :meth:`_query`, :meth:`close`) and the
    schema; the SQL below is shared. ``shared`` is True when several service processes use the
    same database (then uploads and inline contexts are kept in it too, see ``blobs``).
    """

    shared: bool = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Close the database."""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Connection]:
        """One write transaction (committed on exit, rolled back on an exception)."""

    @abstractmethod
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement."""

    # --- jobs -----------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        *,
        owner: str,
        kind: str,
        request: dict[str, Any],
        max_retries: int = 0,
        stored_bytes: int = 0,
        limits: KeyLimits | None = None,
    ) -> JobRecord:
        """Insert a new queued job; ``stored_bytes`` counts its files (inline context), the
        request's JSON is counted here. With ``limits``, refuse (:class:`QuotaExceeded`,
        :class:`KeyLimitReached`) a job the owner may not add."""
        now = time.time()
        text = json.dumps(request)
        with self._tx() as db:
            self._admit(db, owner, stored_bytes + utf8(text), limits)
            db.execute(
                "INSERT INTO jobs (id, owner, kind, status, request, max_retries, created_at, "
                "stored_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, kind, QUEUED, text, max_retries, now, stored_bytes + utf8(text)),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def jobs(
        self,
        status: str | None = None,
        owner: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """Jobs in submission order, optionally filtered; with ``after`` (a job id of
        ``owner``'s) only those submitted after it, and at most ``limit`` of them."""
        sql, args = _listing(
            f"SELECT {JOB_COLUMNS} FROM jobs",
            "created_at, rowid",
            {"status": status, "owner": owner},
            after,
            limit,
        )
        rows = self._query(sql, args)
        return [job_from_row(row) for row in rows]

    def count_active(self, owner: str) -> int:
        """Queued plus running jobs of ``owner`` (for per-key limits)."""
        return int(self._query(_ACTIVE_JOBS, (owner, QUEUED, RUNNING))[0][0])

    def storage_used(self, owner: str) -> int:
        """Bytes ``owner`` keeps in the service: uploads, jobs (request, inline context,
        trajectory, result) and sessions (request, inline context while open, turns)."""
        return int(self._query(_STORAGE_USED, (owner, owner, owner))[0][0])

    @abstractmethod
    def _lock_owner(self, db: Connection, owner: str) -> None:
        """Hold off other limit-checked writes of ``owner`` until ``db``'s transaction ends."""

    def _admit(self, db: Connection, owner: str, more: int, limits: KeyLimits | None) -> None:
        """Raise :class:`KeyLimitReached` or :class:`QuotaExceeded` unless ``owner`` may add a
        row of ``more`` bytes within ``limits``. Called in the transaction that then writes
        it, after :meth:`_lock_owner`, so what is counted here is still true when it commits."""
        if limits is None or limits == KeyLimits():
            return
        self._lock_owner(db, owner)
        counts = (
            ("jobs", limits.active_jobs, _ACTIVE_JOBS, (owner, QUEUED, RUNNING)),
            ("sessions", limits.open_sessions, _OPEN_SESSIONS, (owner, SESSION_OPEN)),
        )
        for what, limit, sql, args in counts:
            if limit is not None:
                (count,) = db.execute(sql, args).fetchone()
                if int(count) >= limit:
                    raise KeyLimitReached(what, int(count), limit)
        quota = limits.storage_bytes
        if quota is not None:
            (used,) = db.execute(_STORAGE_USED, (owner, owner, owner)).fetchone()
            if int(used) + more > quota:
                raise QuotaExceeded(quota, max(quota - int(used), 0))

    def delete_job(self, job_id: str) -> bool:
        """Delete a final job and its events; False if it does not exist or has not ended."""
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM jobs WHERE id = ? AND status IN (?, ?, ?)",
                (job_id, *sorted(FINAL_STATES)),
            )
            if cursor.rowcount != 1:
                return False
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            return True

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that name a job, a session or an uploaded file."""
        wanted = sorted(set(ids))
        found: set[str] = set()
        # In parts: SQLite takes at most 999 parameters per statement in older builds.
        for start in range(0, len(wanted), 300):
            part = tuple(wanted[start : start + 300])
            marks = ", ".join("?" * len(part))
            rows = self._query(
                f"SELECT id FROM jobs WHERE id IN ({marks}) "
                f"UNION SELECT id FROM sessions WHERE id IN ({marks}) "
                f"UNION SELECT id FROM files WHERE id IN ({marks})",
                part * 3,
            )
            found.update(str(row[0]) for row in rows)
        return found

    def ended_before(self, cutoff: float) -> list[str]:
        """Ids of jobs that ended before the Unix time ``cutoff`` (for retention)."""
        rows = self._query(
            "SELECT id FROM jobs WHERE finished_at < ? AND status IN (?, ?, ?)",
            (cutoff, *sorted(FINAL_STATES)),
        )
        return [str(row[0]) for row in rows]

    def files_in_use(self) -> set[str]:
        """Ids of uploaded files that a queued or running job reads."""
        rows = self._query("SELECT request FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING))
        used: set[str] = set()
        for (request,) in rows:
            used.update(json.loads(request).get("file_ids") or [])
        return used

    def counts_by_status(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        counts = dict.fromkeys(JOB_STATES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    def mark_running(self, job_id: str) -> JobRecord | None:
        """queued -> running with a new claim token; None if the job is no longer queued
        (e.g. cancelled)."""
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1, "
                f"claim_token = ? WHERE id = ? AND status = ? RETURNING {JOB_COLUMNS}",
                (RUNNING, time.time(), new_claim_token(), job_id, QUEUED),
            ).fetchone()
        return job_from_row(row) if row is not None else None

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        token: str | None = None,
    ) -> bool:
        """Move a queued or running job to a final state; False if it already was final, or
        when ``token`` (the claim token of the attempt reporting) is no longer the job's."""
        if status not in FINAL_STATES:
            raise ValueError(f"{status!r} is not a final job state")
        fence, fence_args = ("AND claim_token = ?", (token,)) if token is not None else ("", ())
        text = json.dumps(result) if result is not None else None
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?, "
                "stored_bytes = stored_bytes + ? "
                f"WHERE id = ? AND status IN (?, ?) {fence}",
                (
                    status,
                    text,
                    error,
                    time.time(),
                    utf8(text or "") + utf8(error or ""),
                    job_id,
                    QUEUED,
                    RUNNING,
                    *fence_args,
                ),
            )
            return cursor.rowcount == 1

    def recover(self) -> Recovery:
        """After a restart: running jobs fail with "service restarted", or are queued again
        when they have retries left (their partial events are dropped)."""
        failed: list[str] = []
        requeued: list[str] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts, max_retries FROM jobs WHERE status = ? ORDER BY created_at",
                (RUNNING,),
            ).fetchall()
            for job_id, attempts, max_retries in rows:
                if attempts <= max_retries:
                    db.execute(
                        "UPDATE jobs SET status = ?, started_at = NULL, claim_token = NULL "
                        "WHERE id = ?",
                        (QUEUED, job_id),
                    )
                    drop_events(db, job_id)
                    requeued.append(job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                        (FAILED, RESTART_REASON, time.time(), job_id),
                    )
                    failed.append(job_id)
        return Recovery(failed, requeued)

    # --- events ---------------------------------------------------------------------------

    def add_event(self, job_id: str, event: dict[str, Any], token: str | None = None) -> int:
        """Append one trajectory event; returns its sequence number (1, 2, ...).

        With ``token`` (the claim token of the attempt writing), raise :class:`ClaimLost`
        when the job no longer carries it. The job's row is updated first, so that its lock
        keeps a concurrent re-queue (which drops the events) from passing this append.
        """
        text = json.dumps(event, ensure_ascii=False, default=str)
        fence, fence_args = ("AND claim_token = ?", (token,)) if token is not None else ("", ())
        with self._tx() as db:
            cursor = db.execute(
                f"UPDATE jobs SET stored_bytes = stored_bytes + ? WHERE id = ? {fence}",
                (len(text.encode("utf-8")), job_id, *fence_args),
            )
            if token is not None and cursor.rowcount != 1:
                raise ClaimLost(f"job {job_id} was claimed again; this attempt stops")
            (last,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            seq = int(last) + 1
            db.execute(
                "INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)", (job_id, seq, text)
            )
        return seq

    def events(self, job_id: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """Events of a job with sequence number above ``after``, in order."""
        rows = self._query(
            "SELECT seq, event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, after),
        )
        return [(int(seq), json.loads(text)) for seq, text in rows]

    # --- files ----------------------------------------------------------------------------

    def add_file(
        self, record: FileRecord, stored_bytes: int = 0, limits: KeyLimits | None = None
    ) -> None:
        """Insert an upload; ``stored_bytes`` is what it takes on disk when more than its size
        (an unpacked archive), for the storage quota. With ``limits``, refuse
        (:class:`QuotaExceeded`) when the owner's stored bytes would pass the quota."""
        with self._tx() as db:
            self._admit(db, record.owner, max(stored_bytes, record.bytes), limits)
            db.execute(
                "INSERT INTO files (id, owner, filename, bytes, path, created_at, stored_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.filename,
                    record.bytes,
                    str(record.path),
                    record.created_at,
                    stored_bytes,
                ),
            )

    def get_file(self, file_id: str) -> FileRecord | None:
        rows = self._query(
            "SELECT id, owner, filename, bytes, path, created_at FROM files WHERE id = ?",
            (file_id,),
        )
        return _file(rows[0]) if rows else None

    def delete_file(self, file_id: str) -> bool:
        """Forget an uploaded file (the caller removes it from disk and the blobs)."""
        with self._tx() as db:
            return db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount == 1

    def files_created_before(self, cutoff: float) -> list[FileRecord]:
        """Uploaded files older than the Unix time ``cutoff`` (for retention)."""
        rows = self._query(
            "SELECT id, owner, filename, bytes, path, created_at FROM files WHERE created_at < ?",
            (cutoff,),
        )
        return [_file(row) for row in rows]

    # --- sessions -------------------------------------------------------------------------

    def add_session(
        self,
        session_id: str,
        *,
        owner: str,
        request: dict[str, Any],
        holder: str,
        context_bytes: int = 0,
        limits: KeyLimits | None = None,
    ) -> SessionRecord:
        """Insert a new open session held by ``holder``. ``context_bytes`` (its inline context,
        kept as a file while it is open) and the row's JSON count for the storage quota; with
        ``limits``, refuse (:class:`QuotaExceeded`, :class:`KeyLimitReached`) a session the
        owner may not add."""
        now = time.time()
        text = json.dumps(request)
        with self._tx() as db:
            self._admit(db, owner, context_bytes + utf8(text) + 2, limits)
            db.execute(
                "INSERT INTO sessions (id, owner, status, request, turns, holder, created_at, "
                "last_active, context_bytes, stored_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    owner,
                    SESSION_OPEN,
                    text,
                    "[]",
                    holder,
                    now,
                    now,
                    context_bytes,
                    utf8(text) + 2,  # the empty turns, "[]"
                ),
            )
        session = self.get_session(session_id)
        assert session is not None
        return session

    def get_session(self, session_id: str) -> SessionRecord | None:
        rows = self._query(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,))
        return _session(rows[0]) if rows else None

    def sessions(
        self,
        owner: str | None = None,
        status: str | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[SessionRecord]:
        """Sessions in creation order, optionally filtered; ``after`` and ``limit`` page
        through them as in :meth:`jobs`."""
        sql, args = _listing(
            f"SELECT {_SESSION_COLUMNS} FROM sessions",
            "created_at, id",
            {"owner": owner, "status": status},
            after,
            limit,
        )
        rows = self._query(sql, args)
        return [_session(row) for row in rows]

    def count_open_sessions(self, owner: str) -> int:
        """Open sessions of ``owner`` (for the per-key limit)."""
        return int(self._query(_OPEN_SESSIONS, (owner, SESSION_OPEN))[0][0])

    def add_turn(self, session_id: str, turn: dict[str, Any], holder: str) -> None:
        """Append one finished query to a session; ``holder`` now holds its kernel."""
        with self._tx() as db:
            row = db.execute("SELECT turns FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return
            text = json.dumps([*json.loads(row[0]), turn])
            db.execute(
                "UPDATE sessions SET turns = ?, holder = ?, last_active = ?, "
                "stored_bytes = stored_bytes + ? WHERE id = ?",
                (text, holder, time.time(), utf8(text) - utf8(row[0]), session_id),
            )

    def touch_session(self, session_id: str, holder: str) -> None:
        """Mark a session active now, held by ``holder``."""
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET last_active = ?, holder = ? WHERE id = ?",
                (time.time(), holder, session_id),
            )

    def close_session(self, session_id: str, reason: str) -> bool:
        """open -> closed with ``reason``; False if it was closed already."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE sessions SET status = ?, closed_at = ?, closed_reason = ? "
                "WHERE id = ? AND status = ?",
                (SESSION_CLOSED, time.time(), reason, session_id, SESSION_OPEN),
            )
            return cursor.rowcount == 1

    def release_context(self, session_id: str) -> None:
        """The session's inline context was removed: it no longer counts for the quota."""
        with self._tx() as db:
            db.execute("UPDATE sessions SET context_bytes = 0 WHERE id = ?", (session_id,))

    def delete_session(self, session_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 1

    # --- blobs: uploads and inline contexts every replica can read ------------------------

    def put_blob(self, key: str, source: Path) -> None:
        """Store the file ``source`` under ``key`` (in parts, so no part is large)."""
        with self._tx() as db, source.open("rb") as handle:
            db.execute("DELETE FROM blobs WHERE key = ?", (key,))
            part = 0
            while chunk := handle.read(BLOB_PART_BYTES):
                db.execute(
                    "INSERT INTO blobs (key, part, data) VALUES (?, ?, ?)", (key, part, chunk)
                )
                part += 1

    def get_blob(self, key: str, target: Path) -> bool:
        """Write the blob ``key`` to ``target`` (private, 0600); False if there is none."""
        (parts,) = self._query("SELECT COUNT(*) FROM blobs WHERE key = ?", (key,))[0]
        if not parts:
            return False
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = target.with_name(target.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for part in range(int(parts)):
                rows = self._query("SELECT data FROM blobs WHERE key = ? AND part = ?", (key, part))
                if not rows:
                    raise ServiceError(f"stored file {key} is incomplete (part {part} missing)")
                handle.write(bytes(rows[0][0]))
        partial.replace(target)
        return True

    def delete_blob(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM blobs WHERE key = ?", (key,))


_ACTIVE_JOBS = "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN (?, ?)"
_OPEN_SESSIONS = "SELECT COUNT(*) FROM sessions WHERE owner = ? AND status = ?"

#: Bytes one owner keeps (the storage quota's sum): uploads as unpacked, jobs, sessions.
_STORAGE_USED = (
    "SELECT (SELECT COALESCE(SUM(CASE WHEN stored_bytes > bytes THEN stored_bytes "
    "ELSE bytes END), 0) FROM files WHERE owner = ?) + "
    "(SELECT COALESCE(SUM(stored_bytes), 0) FROM jobs WHERE owner = ?) + "
    "(SELECT COALESCE(SUM(context_bytes + stored_bytes), 0) FROM sessions "
    "WHERE owner = ?)"
)

#: The columns of a job row, in the order :func:`job_from_row` reads them (both stores).
JOB_COLUMNS = (
    "id, owner, kind, status, request, result, error, attempts, max_retries, "
    "created_at, started_at, finished_at, claim_token"
)


_SESSION_COLUMNS = (
    "id, owner, status, request, turns, holder, created_at, last_active, closed_at, closed_reason"
)


def _listing(
    select: str,
    order: str,
    equal: dict[str, str | None],
    after: str | None,
    limit: int | None,
) -> tuple[str, tuple[Any, ...]]:
    """A listing's SQL and arguments: ``select`` filtered on the columns of ``equal`` that
    are not None, in ``order``; after the row whose id is ``after``, at most ``limit`` rows.

    The cursor row is looked up with the owner (``equal["owner"]``): another key's id
    matches nothing, so a cursor says nothing about rows that are not the caller's.
    """
    where = [f"{column} = ?" for column, value in equal.items() if value is not None]
    args: list[Any] = [value for value in equal.values() if value is not None]
    if after is not None:
        table = select.rsplit(" ", 1)[-1]
        where.append(f"({order}) > (SELECT {order} FROM {table} WHERE id = ? AND owner = ?)")
        args += [after, equal.get("owner")]
    sql = select + (f" WHERE {' AND '.join(where)}" if where else "") + f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, tuple(args)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    sid, owner, status, request, turns, holder, created, active, closed, reason = row
    return SessionRecord(
        id=sid,
        owner=owner,
        status=status,
        request=json.loads(request),
        turns=json.loads(turns),
        holder=holder,
        created_at=float(created),
        last_active=float(active),
        closed_at=float(closed) if closed is not None else None,
        closed_reason=reason,
    )


def drop_events(db: Connection, job_id: str) -> None:
    """Delete a job's events (its attempt runs again) and stop counting their bytes."""
    rows = db.execute("SELECT event FROM events WHERE job_id = ?", (job_id,)).fetchall()
    db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
    db.execute(
        "UPDATE jobs SET stored_bytes = stored_bytes - ? WHERE id = ?",
        (sum(utf8(text) for (text,) in rows), job_id),
    )


def utf8(text: str) -> int:
    """The bytes ``text`` takes in the database (UTF-8), for the storage quota."""
    return len(text.encode("utf-8"))


def json_bytes(value: Any) -> int:
    """The bytes ``value`` takes stored as JSON (as the store writes it)."""
    return utf8(json.dumps(value))


def new_claim_token() -> str:
    """A fresh fencing token for one attempt of a job."""
    return secrets.token_hex(8)


def _file(row: tuple[Any, ...]) -> FileRecord:
    fid, owner, filename, size, path, created = row
    return FileRecord(fid, owner, filename, int(size), Path(path), float(created))


def job_from_row(row: tuple[Any, ...]) -> JobRecord:
    """The job of a row selected as :data:`JOB_COLUMNS`."""
    (
        job_id,
        owner,
        kind,
        status,
        request,
        result,
        error,
        attempts,
        max_retries,
        created,
        started,
        finished,
        token,
    ) = row
    return JobRecord(
        id=job_id,
        owner=owner,
        kind=kind,
        status=status,
        request=json.loads(request),
        result=json.loads(result) if result else None,
        error=error,
        attempts=int(attempts),
        max_retries=int(max_retries),
        created_at=float(created),
        started_at=float(started) if started is not None else None,
        finished_at=float(finished) if finished is not None else None,
        claim_token=token,
    )
