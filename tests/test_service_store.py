"""The job store on both backends (a real SQLite file and a real private PostgreSQL):
states, recovery, events, blobs, claim tokens, versioned migrations (old SQLite files
included); SQLite's WAL mode and data-dir errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.service.migrate import MIGRATIONS
from engine.service.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RESTART_REASON,
    RUNNING,
    SUCCEEDED,
    ClaimLost,
    FileRecord,
    JobStore,
    KeyLimitReached,
    KeyLimits,
    QuotaExceeded,
    json_bytes,
    open_store,
)
from engine.service.store_sqlite import SqliteJobStore

Opener = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same database again on each call (as a new process would)."""
    if request.param == "sqlite":
        target: str | Path = tmp_path / "jobs.sqlite3"
    else:
        target = request.getfixturevalue("pg_url")
    return lambda: open_store(target)


@pytest.fixture
def store(opener: Opener) -> Iterator[JobStore]:
    with opener() as opened:
        yield opened


def test_database_is_in_wal_mode_and_readable_while_written(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    store.add_job("a", owner="o", kind="job", request={"query": "q"})
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store._db.execute("BEGIN IMMEDIATE")  # a writer holds the write lock...
        try:
            rows = other.execute("SELECT id, status FROM jobs").fetchall()  # ...readers go on
        finally:
            store._db.execute("ROLLBACK")
        assert rows == [("a", QUEUED)]
    finally:
        other.close()
        store.close()


def test_state_transitions(store: JobStore) -> None:
    store.add_job("a", owner="o", kind="job", request={"query": "q"})
    assert store.mark_running("a") and not store.mark_running("a")
    assert store.count_active("o") == 1 and store.count_active("someone else") == 0
    assert store.finish("a", SUCCEEDED, result={"answer": "42"})
    assert not store.finish("a", CANCELLED)  # already final: the first outcome stays
    job = store.get_job("a")
    assert job is not None
    assert (job.status, job.result, job.attempts, job.final) == (
        SUCCEEDED,
        {"answer": "42"},
        1,
        True,
    )
    with pytest.raises(ValueError):
        store.finish("a", RUNNING)
    assert store.counts_by_status() == {
        QUEUED: 0,
        RUNNING: 0,
        SUCCEEDED: 1,
        FAILED: 0,
        CANCELLED: 0,
    }


def test_recover_fails_or_requeues_interrupted_jobs(opener: Opener) -> None:
    with opener() as store:
        store.add_job("plain", owner="o", kind="job", request={"query": "q"})
        store.add_job("retry", owner="o", kind="job", request={"query": "q"}, max_retries=1)
        store.add_job("waiting", owner="o", kind="job", request={"query": "q"})
        for job_id in ("plain", "retry"):
            store.mark_running(job_id)
            store.add_event(job_id, {"type": "run_start"})
    # A new process opens the same database, as after a crash.
    with opener() as store:
        recovery = store.recover()
        assert (recovery.failed, recovery.requeued) == (["plain"], ["retry"])
        plain, retry = store.get_job("plain"), store.get_job("retry")
        assert plain is not None and retry is not None
        assert (plain.status, plain.error) == (FAILED, RESTART_REASON)
        assert plain.finished_at is not None
        assert (retry.status, retry.attempts) == (QUEUED, 1)
        assert store.events("retry") == [] and len(store.events("plain")) == 1
        assert [j.id for j in store.jobs(status=QUEUED)] == ["retry", "waiting"]
        # The retried job runs again and, interrupted a second time, has no retries left.
        store.mark_running("retry")
        assert store.recover().failed == ["retry"]


def test_events_are_numbered_in_order_and_resumable(store: JobStore) -> None:
    store.add_job("a", owner="o", kind="job", request={"query": "q"})
    store.add_job("b", owner="o", kind="job", request={"query": "q"})
    for index in range(5):
        assert store.add_event("a", {"type": "turn", "i": index}) == index + 1
    assert store.add_event("b", {"type": "x"}) == 1
    assert [seq for seq, _ in store.events("a")] == [1, 2, 3, 4, 5]
    assert [event["i"] for _, event in store.events("a", after=3)] == [3, 4]


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    from engine.errors import ServiceError

    with pytest.raises(ServiceError, match="--data-dir"):
        SqliteJobStore(blocker / "jobs.sqlite3")


def test_blobs_round_trip_in_parts(store: JobStore, tmp_path: Path) -> None:
    from engine.service.store import BLOB_PART_BYTES

    source = tmp_path / "upload.bin"
    data = bytes(range(256)) * (BLOB_PART_BYTES // 256) + b"tail"  # two parts
    source.write_bytes(data)
    store.put_blob("file-1", source)
    target = tmp_path / "elsewhere" / "copy.bin"
    assert store.get_blob("file-1", target)
    assert target.read_bytes() == data and target.stat().st_mode & 0o777 == 0o600
    assert not store.get_blob("missing", tmp_path / "none")
    store.delete_blob("file-1")
    assert not store.get_blob("file-1", target)


def test_jobs_keep_submission_order_and_filters(store: JobStore) -> None:
    for index, owner in enumerate(["x", "y", "x"]):
        store.add_job(f"j{index}", owner=owner, kind="job", request={"query": str(index)})
    assert [j.id for j in store.jobs()] == ["j0", "j1", "j2"]
    assert [j.id for j in store.jobs(owner="x")] == ["j0", "j2"]
    store.mark_running("j1")
    assert [j.id for j in store.jobs(status=QUEUED)] == ["j0", "j2"]
    assert store.get_job("j1") is not None and store.get_job("nope") is None


def test_listings_page_with_a_cursor_of_the_owner(store: JobStore) -> None:
    for index, owner in enumerate("xyxxyx"):
        store.add_job(f"j{index}", owner=owner, kind="job", request={"query": str(index)})
        store.add_session(f"s{index}", owner=owner, request={}, holder="h")
    assert [j.id for j in store.jobs(owner="x", limit=2)] == ["j0", "j2"]
    assert [j.id for j in store.jobs(owner="x", after="j2", limit=2)] == ["j3", "j5"]
    assert [j.id for j in store.jobs(owner="x", after="j5")] == []
    # Another owner's id as the cursor matches nothing (it says nothing about that job).
    assert store.jobs(owner="x", after="j1") == [] and store.jobs(owner="x", after="no") == []
    assert [s.id for s in store.sessions(owner="x", after="s0", limit=2)] == ["s2", "s3"]
    assert store.sessions(owner="x", after="s4") == []


def test_known_ids_names_jobs_sessions_and_files_in_any_number(store: JobStore) -> None:
    store.add_job("job-a", owner="o", kind="job", request={})
    store.add_session("sess-b", owner="o", request={}, holder="h")
    store.add_file(FileRecord("file-c", "o", "c.txt", 1, Path("/files/c/c.txt"), 0.0))
    asked = ["job-a", "sess-b", "file-c", "gone", "job-a"] + [f"x{n}" for n in range(700)]
    assert store.known_ids(asked) == {"job-a", "sess-b", "file-c"}
    assert store.known_ids([]) == set()
    assert store.delete_job("job-a") is False  # not ended: kept
    store.finish("job-a", SUCCEEDED)
    assert store.delete_job("job-a") and store.known_ids(asked) == {"sess-b", "file-c"}


def test_sessions_keep_their_turns_and_close_once(opener: Opener) -> None:
    from engine.service.store import SESSION_CLOSED, SESSION_OPEN

    with opener() as store:
        created = store.add_session("s1", owner="o", request={"model": None}, holder="h1")
        store.add_session("s2", owner="o", request={}, holder="h1")
        store.add_session("s3", owner="other", request={}, holder="h1")
        assert created.open and created.turns == [] and created.holder == "h1"
        store.add_turn("s1", {"job_id": "j1", "query": "q1", "answer": "a1"}, holder="h2")
        store.add_turn("s1", {"job_id": "j2", "query": "q2", "answer": "a2"}, holder="h2")
        assert store.count_open_sessions("o") == 2
        assert store.close_session("s2", "closed by the user")
        assert not store.close_session("s2", "again")  # closed once
        assert store.count_open_sessions("o") == 1
    # Another process (or replica) reads what the first wrote.
    with opener() as store:
        session = store.get_session("s1")
        assert session is not None and session.holder == "h2"
        assert [t["query"] for t in session.turns] == ["q1", "q2"]
        assert session.last_active >= session.created_at
        closed = store.get_session("s2")
        assert closed is not None and closed.status == SESSION_CLOSED
        assert closed.closed_reason == "closed by the user" and closed.closed_at is not None
        assert [s.id for s in store.sessions(owner="o")] == ["s1", "s2"]
        assert [s.id for s in store.sessions(status=SESSION_OPEN)] == ["s1", "s3"]
        assert store.delete_session("s2") and store.get_session("s2") is None
        assert store.get_session("missing") is None


def test_storage_counts_every_byte_a_key_keeps(opener: Opener) -> None:
    """Jobs (request, inline context, events, result), sessions (request, inline context
    while open, turns) and uploads all count for their owner until released or deleted."""
    with opener() as store:
        request = {"query": "q" * 100, "context_path": "/data/jobs/j/context.txt"}
        store.add_job("j", owner="o", kind="job", request=request, stored_bytes=1000)
        expected = 1000 + json_bytes(request)
        assert store.storage_used("o") == expected
        store.add_event("j", {"type": "turn", "text": "é" * 50})
        store.finish("j", SUCCEEDED, result={"answer": "ü" * 30})
        # Events are kept as UTF-8 JSON (2 bytes per "é"), the rest as ASCII JSON ("\u00fc").
        expected += 2 * 50 + len('{"type": "turn", "text": ""}') + json_bytes({"answer": "ü" * 30})
        assert store.storage_used("o") == expected
        session = {"tools": None, "context_path": "/data/jobs/s/context.txt"}
        store.add_session("s", owner="o", request=session, holder="h", context_bytes=500)
        store.add_session("t", owner="other", request={}, holder="h", context_bytes=7)
        turns = [{"job_id": f"j{n}", "query": "q" * n, "answer": "ß" * n} for n in (5, 9)]
        for turn in turns:
            store.add_turn("s", turn, holder="h")
        expected += 500 + json_bytes(session) + json_bytes(turns)
        assert store.storage_used("o") == expected
    with opener() as store:  # what another replica sees
        assert store.storage_used("o") == expected
        store.close_session("s", "ended by the user")
        store.release_context("s")  # the context's file is gone; its history stays
        assert store.storage_used("o") == expected - 500
        assert store.delete_session("s") and store.delete_job("j")
        assert store.storage_used("o") == 0
        assert store.storage_used("other") == 7 + json_bytes({}) + json_bytes([])


def test_quota_checked_writes_fill_the_quota_exactly_and_never_pass_it(store: JobStore) -> None:
    """Each write that counts (a job, a session, an upload) is refused, and nothing written,
    when its bytes would take the owner past the quota, in the write's own transaction."""
    request = {"query": "q"}
    job_cost = 400 + json_bytes(request)
    session_cost = 300 + json_bytes({}) + json_bytes([])
    upload = FileRecord("f", "o", "a.txt", 200, Path("/files/f/a.txt"), 0.0)
    quota = job_cost + session_cost + 250  # the upload counts as unpacked: 250 bytes
    cap = KeyLimits(storage_bytes=quota)
    store.add_job("j", owner="o", kind="job", request=request, stored_bytes=400, limits=cap)
    store.add_session("s", owner="o", request={}, holder="h", context_bytes=300, limits=cap)
    with pytest.raises(QuotaExceeded) as refused:
        store.add_file(upload, stored_bytes=251, limits=cap)
    assert (refused.value.quota, refused.value.left) == (quota, 250)
    assert store.get_file("f") is None
    store.add_file(upload, stored_bytes=250, limits=cap)
    assert store.storage_used("o") == quota
    with pytest.raises(QuotaExceeded):
        store.add_job("j2", owner="o", kind="job", request={}, limits=cap)
    with pytest.raises(QuotaExceeded):
        store.add_session("s2", owner="o", request={}, holder="h", limits=cap)
    assert store.get_job("j2") is None and store.get_session("s2") is None
    # Another key has its own quota; no quota at all refuses nothing.
    store.add_job(
        "k",
        owner="other",
        kind="job",
        request=request,
        limits=KeyLimits(storage_bytes=json_bytes(request)),
    )
    store.add_job("j3", owner="o", kind="job", request={}, limits=KeyLimits())
    assert store.storage_used("o") == quota + json_bytes({})


def test_count_checked_writes_stop_at_the_keys_limits(store: JobStore) -> None:
    """Queued or running jobs (of any kind) and open sessions per key, checked as they are
    written: a job that ended or a session that closed no longer counts."""
    jobs, sessions = KeyLimits(active_jobs=2), KeyLimits(open_sessions=1)
    store.add_job("a", owner="o", kind="job", request={}, limits=jobs)
    store.add_job("b", owner="o", kind="session", request={}, limits=jobs)
    with pytest.raises(KeyLimitReached) as refused:
        store.add_job("c", owner="o", kind="job", request={}, limits=jobs)
    assert (refused.value.what, refused.value.count, refused.value.limit) == ("jobs", 2, 2)
    assert store.get_job("c") is None
    store.finish("a", SUCCEEDED, result={})
    store.add_job("c", owner="o", kind="job", request={}, limits=jobs)
    store.add_session("s", owner="o", request={}, holder="h", limits=sessions)
    with pytest.raises(KeyLimitReached):
        store.add_session("t", owner="o", request={}, holder="h", limits=sessions)
    store.add_session("t", owner="other", request={}, holder="h", limits=sessions)
    store.close_session("s", "ended by the user")
    store.add_session("u", owner="o", request={}, holder="h", limits=sessions)


def test_a_rerun_job_stops_counting_the_events_it_dropped(opener: Opener) -> None:
    with opener() as store:
        store.add_job("r", owner="o", kind="job", request={"query": "q"}, max_retries=1)
        store.mark_running("r")
        store.add_event("r", {"type": "run_start", "text": "x" * 1000})
        assert store.storage_used("o") > 1000
    with opener() as store:  # the process died: the job runs again, its events dropped
        assert store.recover().requeued == ["r"]
        assert store.events("r") == []
        assert store.storage_used("o") == json_bytes({"query": "q"})


def test_an_attempt_writes_only_while_it_holds_its_claim(opener: Opener) -> None:
    """The claim token fences an attempt: once the job was queued again (and claimed by a new
    attempt), the old attempt's events and outcome are refused."""
    with opener() as store:
        store.add_job("j", owner="o", kind="job", request={"query": "q"}, max_retries=1)
        stale = store.mark_running("j")
        assert stale is not None and stale.claim_token
        assert store.add_event("j", {"type": "run_start"}, token=stale.claim_token) == 1
    with opener() as store:  # the process died: the next start queues the job again
        assert store.recover().requeued == ["j"]
        with pytest.raises(ClaimLost):
            store.add_event("j", {"type": "turn"}, token=stale.claim_token)
        assert not store.finish("j", SUCCEEDED, result={"answer": "stale"}, token=stale.claim_token)
        fresh = store.mark_running("j")
        assert fresh is not None and fresh.claim_token not in (None, stale.claim_token)
        with pytest.raises(ClaimLost):
            store.add_event("j", {"type": "turn"}, token=stale.claim_token)
        assert not store.finish("j", SUCCEEDED, result={"answer": "stale"}, token=stale.claim_token)
        assert store.add_event("j", {"type": "run_start"}, token=fresh.claim_token) == 1
        assert store.finish("j", SUCCEEDED, result={"answer": "fresh"}, token=fresh.claim_token)
        job = store.get_job("j")
        assert job is not None and (job.status, job.result) == (SUCCEEDED, {"answer": "fresh"})
        assert [event["type"] for _, event in store.events("j")] == ["run_start"]


MIGRATION_IDS = sorted(path.stem for path in MIGRATIONS.glob("[0-9]*.py"))
OLD_SCHEMAS = sorted((Path(__file__).parent / "fixtures" / "sqlite").glob("schema-*.sql"))


@pytest.mark.parametrize("schema", OLD_SCHEMAS, ids=[p.stem for p in OLD_SCHEMAS])
def test_a_database_made_before_migrations_is_upgraded(tmp_path: Path, schema: Path) -> None:
    """A SQLite file made by an older store (its schema SQL as it was, a job and a file in
    it) opens with every migration applied and its rows intact."""
    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(schema.read_text())
    old.execute(
        "INSERT INTO jobs (id, owner, kind, status, request, created_at) "
        "VALUES ('old', 'o', 'job', 'queued', '{\"query\": \"q\"}', 1.0)"
    )
    old.execute(
        "INSERT INTO files (id, owner, filename, bytes, path, created_at) "
        "VALUES ('f', 'o', 'a.txt', 3, '/x/a.txt', 1.0)"
    )
    old.commit()
    old.close()
    with SqliteJobStore(path) as store:
        job = store.get_job("old")
        assert job is not None and (job.status, job.request) == (QUEUED, {"query": "q"})
        # The upload's bytes, and the job's request (counted since 0005_session_storage).
        assert store.storage_used("o") == 3 + json_bytes({"query": "q"})
        running = store.mark_running("old")
        assert running is not None and running.claim_token
        store.add_event("old", {"type": "run_start"}, token=running.claim_token)
        assert store.finish("old", SUCCEEDED, result={"answer": "a"}, token=running.claim_token)
    with SqliteJobStore(path) as store:  # opening again applies nothing twice
        assert store.get_job("old") is not None
    check = sqlite3.connect(path)
    try:
        applied = [row[0] for row in check.execute("SELECT migration_id FROM _yoyo_migration")]
    finally:
        check.close()
    assert sorted(applied) == MIGRATION_IDS


def test_new_databases_get_every_migration_once(opener: Opener) -> None:
    with opener() as store, opener() as again:
        again.add_job("x", owner="o", kind="job", request={"query": "q"})
        rows = store._query("SELECT migration_id FROM _yoyo_migration")
    assert sorted(row[0] for row in rows) == MIGRATION_IDS
