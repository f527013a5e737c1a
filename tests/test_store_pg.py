"""The PostgreSQL store's queue operations on a real private cluster: claims with SKIP
LOCKED from many connections at once, leases, reclaiming a dead replica's jobs, cancel
requests, notifications, and claim tokens fencing a replica that lost its lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine.errors import ServiceError
from engine.service.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ClaimLost,
    FileRecord,
    KeyLimitReached,
    KeyLimits,
    QuotaExceeded,
)
from engine.service.store_pg import LOST_REASON, PgJobStore


@pytest.fixture
def store(pg_url: str) -> Iterator[PgJobStore]:
    with PgJobStore(pg_url) as opened:
        yield opened


def expire(url: str, job_id: str) -> None:
    """Make a job's lease run out now (as if its replica stopped renewing long ago)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_until = 0 WHERE id = %s", (job_id,))


def test_concurrent_claims_take_every_job_exactly_once(pg_url: str) -> None:
    with PgJobStore(pg_url) as store:
        for index in range(40):
            store.add_job(f"j{index:02d}", owner="o", kind="job", request={"query": "q"})
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def replica(name: str) -> None:
        with PgJobStore(pg_url, pool_size=2) as mine:
            barrier.wait()
            taken = claims.setdefault(name, [])
            while (job := mine.claim(name, 30)) is not None:
                assert job.status == RUNNING and job.attempts == 1
                taken.append(job.id)

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for taken in claims.values() for job_id in taken]
    assert sorted(every) == [f"j{index:02d}" for index in range(40)]
    with PgJobStore(pg_url) as store:
        owners = {job.id: job for job in store.jobs(status=RUNNING)}
        assert len(owners) == 40


def test_claims_take_the_oldest_first_and_leases_renew(store: PgJobStore) -> None:
    store.add_job("first", owner="o", kind="job", request={"query": "q"})
    store.add_job("second", owner="o", kind="job", request={"query": "q"})
    first = store.claim("a", 30)
    assert first is not None and first.id == "first"
    second = store.claim("b", 30)
    assert second is not None and second.id == "second"
    assert store.claim("a", 30) is None
    assert store.renew("a", 30).held == {"first"}
    assert store.renew("b", 30).held == {"second"}
    assert store.finish("first", SUCCEEDED, result={"answer": "x"})
    assert store.renew("a", 30).held == set()  # a finished job is no longer leased


def test_reclaim_requeues_fails_or_cancels_jobs_of_a_dead_replica(
    store: PgJobStore, pg_url: str
) -> None:
    store.add_job("retry", owner="o", kind="job", request={"query": "q"}, max_retries=1)
    store.add_job("once", owner="o", kind="job", request={"query": "q"})
    store.add_job("cancel", owner="o", kind="job", request={"query": "q"}, max_retries=3)
    store.add_job("alive", owner="o", kind="job", request={"query": "q"})
    store.add_job("never", owner="o", kind="job", request={"query": "q"})
    for _ in range(3):
        assert store.claim("dead", 30) is not None
    assert store.claim("live", 30) is not None
    assert store.cancel_queued("never") and not store.cancel_queued("never")
    store.add_event("retry", {"type": "run_start"})
    assert store.request_cancel("cancel") and not store.request_cancel("nope")
    assert not store.cancel_queued("cancel")  # running: only its replica may end it
    assert store.renew("dead", 30).cancel == {"cancel"}
    assert store.reclaim().failed == []  # leases still valid: nothing happens
    for job_id in ("retry", "once", "cancel"):
        expire(pg_url, job_id)
    recovery = store.reclaim()
    assert (sorted(recovery.failed), recovery.requeued) == (["cancel", "once"], ["retry"])
    jobs = {job.id: job for job in store.jobs()}
    assert (jobs["once"].status, jobs["once"].error) == (FAILED, LOST_REASON)
    assert jobs["cancel"].status == CANCELLED
    assert (jobs["retry"].status, jobs["retry"].attempts) == (QUEUED, 1)
    assert store.events("retry") == []
    assert jobs["alive"].status == RUNNING
    # The re-queued job runs on the surviving replica; its second loss is final.
    again = store.claim("live", 30)
    assert again is not None and (again.id, again.attempts) == ("retry", 2)
    store.release("live")  # a replica that stops gives its jobs up at once
    assert sorted(store.reclaim().failed) == ["alive", "retry"]


def test_a_replica_that_lost_its_lease_cannot_overwrite_the_rerun(pg_url: str) -> None:
    """Replica a is paused past its lease; b re-runs the job. When a resumes, neither its
    events nor its outcome land, while b's do."""
    with PgJobStore(pg_url) as a, PgJobStore(pg_url) as b:
        a.add_job("j", owner="o", kind="job", request={"query": "q"}, max_retries=1)
        first = a.claim("a", 30)
        assert first is not None and first.claim_token
        a.add_event("j", {"type": "run_start", "by": "a"}, token=first.claim_token)
        expire(pg_url, "j")
        assert b.reclaim().requeued == ["j"]
        second = b.claim("b", 30)
        assert second is not None and second.claim_token != first.claim_token
        b.add_event("j", {"type": "run_start", "by": "b"}, token=second.claim_token)
        # a resumes: its lease renewal finds nothing, and its writes are refused.
        assert a.renew("a", 30).held == set()
        with pytest.raises(ClaimLost):
            a.add_event("j", {"type": "turn", "by": "a"}, token=first.claim_token)
        assert not a.finish("j", SUCCEEDED, result={"answer": "a"}, token=first.claim_token)
        assert b.finish("j", SUCCEEDED, result={"answer": "b"}, token=second.claim_token)
        job = b.get_job("j")
        assert job is not None and (job.status, job.result) == (SUCCEEDED, {"answer": "b"})
        assert [event["by"] for _, event in b.events("j")] == ["b"]


def _write(store: PgJobStore, kind: int, key: str, owner: str, limits: KeyLimits) -> None:
    """One limit-checked write of about 1 KB: a job, a session message, a session, an upload."""
    if kind == 0:
        store.add_job(key, owner=owner, kind="job", request={}, stored_bytes=1000, limits=limits)
    elif kind == 1:
        store.add_held(
            key, owner=owner, kind="session", request={"q": "q" * 1000}, replica="r",
            lease_s=30, limits=limits,
        )  # fmt: skip
    elif kind == 2:
        store.add_session(
            key, owner=owner, request={}, holder="h", context_bytes=1000, limits=limits
        )
    else:
        record = FileRecord(key, owner, "a.txt", 1000, Path("/files") / key / "a.txt", 0.0)
        store.add_file(record, stored_bytes=1200, limits=limits)


Refusals = list[tuple[str, ServiceError]]


def _race(pg_url: str, kinds: tuple[int, ...], limits: KeyLimits) -> tuple[PgJobStore, Refusals]:
    """Eight writers on two stores (two replicas' connection pools) write ``kinds`` of rows
    for the key "k" at once, 30 each; the refused writes (an open store to look with)."""
    refused: Refusals = []
    with PgJobStore(pg_url, pool_size=4) as a, PgJobStore(pg_url, pool_size=4) as b:
        barrier = threading.Barrier(8)

        def writer(store: PgJobStore, index: int) -> None:
            barrier.wait()
            for n in range(30):
                key = f"w{index}-{n}"
                try:
                    _write(store, kinds[(index + n) % len(kinds)], key, "k", limits)
                except (QuotaExceeded, KeyLimitReached) as exc:
                    refused.append((key, exc))

        threads = [
            threading.Thread(target=writer, args=(a if index % 2 else b, index))
            for index in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    looker = PgJobStore(pg_url)
    for key, _ in refused:  # a refused write left nothing behind
        assert looker.get_job(key) is None and looker.get_session(key) is None
        assert looker.get_file(key) is None
    return looker, refused


def test_concurrent_writes_of_one_key_on_two_replicas_stay_within_its_quota(pg_url: str) -> None:
    """Jobs, session messages, sessions and uploads for one key at once, on two replicas: the
    key ends at or under its quota (each check and its write are one step), filled to within
    one write."""
    quota = 50_000
    store, refused = _race(pg_url, (0, 1, 2, 3), KeyLimits(storage_bytes=quota))
    with store:
        used = store.storage_used("k")
        assert quota - 1200 < used <= quota, used
        assert len(refused) > 100  # most writes came after the quota was full
        for _, exc in refused:
            assert isinstance(exc, QuotaExceeded) and exc.quota == quota and exc.left < 1200
        # Another key is not held to this one's quota.
        _write(store, 0, "other-key-job", "other", KeyLimits(storage_bytes=quota))
        assert store.storage_used("other") == 1000 + 2


@pytest.mark.parametrize(
    ("kinds", "limits"),
    [((0, 1), KeyLimits(active_jobs=10)), ((2,), KeyLimits(open_sessions=5))],
    ids=["jobs", "sessions"],
)
def test_concurrent_writes_of_one_key_on_two_replicas_stay_within_its_counts(
    pg_url: str, kinds: tuple[int, ...], limits: KeyLimits
) -> None:
    """Queued or running jobs (queued jobs and session messages) and open sessions of one key,
    added on two replicas at once, end exactly at the key's limit."""
    store, refused = _race(pg_url, kinds, limits)
    with store:
        limit = limits.active_jobs or limits.open_sessions
        assert len(refused) == 240 - limit
        for _, exc in refused:
            assert isinstance(exc, KeyLimitReached) and (exc.count, exc.limit) == (limit, limit)
        assert store.count_active("k") + store.count_open_sessions("k") == limit


def test_changes_are_notified_to_listeners(store: PgJobStore, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as listener:
        for channel in ("rlm_job", "rlm_queue", "rlm_cancel"):
            listener.execute(f"LISTEN {channel}")
        store.add_job("n", owner="o", kind="job", request={"query": "q"})
        assert store.claim("r", 30) is not None
        store.renew("r", 30)  # lease renewals are not changes anyone waits for
        store.add_event("n", {"type": "turn"})
        store.request_cancel("n")
        seen = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=6)]
    assert seen == [
        ("rlm_job", "n"),
        ("rlm_queue", "n"),
        ("rlm_job", "n"),
        ("rlm_job", "n"),
        ("rlm_job", "n"),
        ("rlm_cancel", "n"),
    ]


def test_unreachable_database_is_a_clear_error(pg_cluster: object) -> None:
    from tests.service_support import free_port

    with pytest.raises(ServiceError, match="--database-url"):
        PgJobStore(f"postgresql://rlm@127.0.0.1:{free_port()}/postgres", timeout_s=2)
